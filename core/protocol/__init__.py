"""The wire: the Open Inference Protocol's tensor codec (server and client sides), Triton's
model configuration (one translation), the engine's own values as JSON (stable type
names), and errors as HTTP statuses (one table for both ends).

Example:
    >>> body, headers = encode_infer_request({"x": np.zeros((1, 4), np.float32)})
"""

from __future__ import annotations

from . import jsontext, triton
from .oip import (HEADER_LENGTH, OIPError, check_answer, encode_infer_response,
                  encode_infer_response_parts, metadata, parse_infer_request)
from .oip_client import encode_infer_request, parse_infer_response
from .status import MAX_ERROR_CHARS, HTTPError, cut_message, error_from, status_of
from .wire import WireCodec, WireError

__all__ = ["jsontext", "triton", "HEADER_LENGTH", "OIPError", "encode_infer_request",
           "encode_infer_response", "encode_infer_response_parts", "check_answer", "metadata",
           "parse_infer_request", "parse_infer_response",
           "HTTPError", "error_from", "status_of", "cut_message", "MAX_ERROR_CHARS", "WireCodec", "WireError"]
