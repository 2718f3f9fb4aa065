"""Models: what a model is (types, one datatype table), loading and its checks, the session
cache, request validation, sample inputs, the memory budget, the probe in a child process,
and the built-in demo and hostile models.

Example:
    >>> from core.models import load_model_bytes, build_demo_model
    >>> load_model_bytes(build_demo_model("mlp"), "mlp").info.batch_mode
    'dynamic'
"""

from __future__ import annotations

from .cache import CacheEntry, SessionCache
from .demo import DEMO_MODELS, build_demo_model, build_onnx, demo_description
from .hostile import build_declared_shape, build_loop_model, build_memory_bomb
from .loading import (LoadedModel, check_model_bytes, load_model_bytes, read_model_source,
                      refuse_not_onnx)
from .memory import (check_elements, current_rss_bytes, default_memory_budget, format_bytes,
                     generated_input_limit, install_memory_budget, memory_budget,
                     request_bytes_limit,
                     peak_rss_bytes)
from .probe import probe_model
from .inputs import INPUT_SUFFIXES, MAX_INPUT_BYTES, SampleInputs, read_inputs
from .inputfile import input_bytes, input_file
from .sampling import generated_values, ids_refused, narrowed, sample_input
from .session import available_providers, create_session
from .types import (OIP_DTYPES, ORT_DTYPES, ModelInfo, TensorSpec, batch_mode, interface,
                    interface_differences, swap_differences, alike_models,
                    oip_datatype, onnx_type)
from .validation import RequestValidator, describe_array, owned

__all__ = [
    "CacheEntry", "SessionCache", "DEMO_MODELS", "build_demo_model", "build_onnx",
    "demo_description", "build_declared_shape", "build_loop_model", "build_memory_bomb",
    "LoadedModel", "load_model_bytes", "check_model_bytes", "refuse_not_onnx", "read_model_source", "check_elements",
    "current_rss_bytes", "default_memory_budget", "format_bytes", "generated_input_limit",
    "install_memory_budget", "memory_budget", "request_bytes_limit", "peak_rss_bytes", "probe_model", "sample_input", "generated_values", "narrowed", "ids_refused", "SampleInputs", "read_inputs", "input_file", "input_bytes", "INPUT_SUFFIXES",
    "MAX_INPUT_BYTES",
    "available_providers", "create_session", "OIP_DTYPES", "ORT_DTYPES", "ModelInfo",
    "TensorSpec", "batch_mode", "interface", "interface_differences", "swap_differences", "alike_models", "oip_datatype", "onnx_type", "RequestValidator",
    "describe_array", "owned",
]
