"""Real inputs (issue 26): a model fed real samples instead of random numbers, from the
files people have (.npy, .npz, CSV, Parquet, perf_analyzer's JSON), checked against the
model; a shadow A/B between two real classifiers then reports their real agreement.
Real scikit-learn models converted with skl2onnx, on iris."""

from __future__ import annotations

import io
import json
import time
import zipfile

import numpy as np
import pandas as pd
import pytest

from core import Engine
from core.errors import InputValidationError
from core.serving import EngineServer, RemoteEngine
from tests.helpers import WAIT_S, identity_model

sklearn = pytest.importorskip("sklearn")
skl2onnx = pytest.importorskip("skl2onnx")


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    lr = LogisticRegression(max_iter=500).fit(X, y)
    rf = RandomForestClassifier(n_estimators=3, max_depth=2, random_state=0).fit(X, y)

    def onnx(model):
        return skl2onnx.to_onnx(model, X[:1], options={id(model): {"zipmap": False}}
                                ).SerializeToString()
    csv = pd.DataFrame(X, columns=["sepal_l", "sepal_w", "petal_l", "petal_w"]
                       ).to_csv(index=False).encode()
    return {"X": X, "lr": lr, "rf": rf, "lr_onnx": onnx(lr), "rf_onnx": onnx(rf), "csv": csv}


def until(predicate, what: str):
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_shadow_ab_on_real_inputs_reports_the_models_real_agreement(iris):
    X = iris["X"]
    want = float((iris["lr"].predict(X) == iris["rf"].predict(X)).mean())
    with Engine(demo_models=False) as engine:
        engine.load_model(iris["lr_onnx"], name="lr")
        engine.load_model(iris["rf_onnx"], name="rf")
        assert engine.input_source("lr").startswith("generated")
        for name in ("lr", "rf"):
            assert engine.set_inputs(name, iris["csv"], "iris.csv") == \
                "real: iris.csv (150 samples)"
            engine.configure(name, max_batch_size=256)
        engine.create_ab("exp", a="lr", b="rf", mode="shadow")
        assert engine.input_source("exp") == "real: iris.csv (150 samples)"
        rows = engine.sample_input("lr", rows=150, seed=None)  # every sample, in order
        np.testing.assert_array_equal(rows, X)
        engine.predict("exp", rows)
        until(lambda: engine.ab_report("exp").shadow["compared_requests"] == 1,
              "the shadow comparison")
        got = engine.ab_report("exp").shadow["label_agreement"]
        assert got == pytest.approx(want) and want < 1.0  # the models really differ
        # traffic draws from the real samples too (seeded, reproducible)
        a, b = engine.sample_input("lr", rows=8, seed=3), engine.sample_input("lr", 8, 3)
        np.testing.assert_array_equal(a, b)
        assert all(any((r == X).all(axis=1)) for r in a)
        engine.start_traffic("exp", rate_rps=200, duration_s=0.3, seed=1)
        engine.wait_traffic("exp", timeout_s=WAIT_S)
        until(lambda: engine.ab_report("exp").shadow["compared_requests"] > 10, "copies")
        assert engine.ab_report("exp").shadow["b_failed"] == 0


def test_the_same_model_served_here_and_remotely_is_a_valid_ab_pair(iris):
    """skl2onnx names no batch dimension (None); a server reports -1: the same model."""
    with Engine(demo_models=False) as far, Engine(demo_models=False) as engine:
        far.load_model(iris["lr_onnx"], name="lr")
        server = EngineServer(far, port=0).start()
        try:
            engine.load_model(iris["lr_onnx"], name="lr")
            engine.add_remote("lr-far", url=server.url, model="lr")
            engine.create_ab("here-vs-there", a="lr", b="lr-far", mode="shadow")
            engine.set_inputs("lr", iris["csv"], "iris.csv")
            engine.predict("here-vs-there", engine.sample_input("lr", rows=16, seed=0))
            until(lambda: engine.ab_report("here-vs-there").shadow["compared_requests"] == 1,
                  "the comparison")
            assert engine.ab_report("here-vs-there").shadow["label_agreement"] == 1.0
        finally:
            server.close()


def test_every_file_kind_reads_and_a_wrong_one_says_what_is_wrong(iris, tmp_path):
    X = iris["X"]
    with Engine(demo_models=False) as engine:
        engine.load_model(iris["lr_onnx"], name="lr")

        def put(data: bytes, name: str) -> str:
            return engine.set_inputs("lr", data, name)

        buf = io.BytesIO()
        np.save(buf, X[:10])
        assert put(buf.getvalue(), "x.npy") == "real: x.npy (10 samples)"
        buf = io.BytesIO()
        np.savez(buf, X=X[:12])
        assert put(buf.getvalue(), "x.npz") == "real: x.npz (12 samples)"
        parquet = io.BytesIO()
        pd.DataFrame(X[:7], columns=list("abcd")).to_parquet(parquet)
        assert put(parquet.getvalue(), "x.parquet") == "real: x.parquet (7 samples)"
        # perf_analyzer's input data: flat values, or content with its shape
        doc = {"data": [{"X": X[0].tolist()}, {"X": {"content": X[1:3].ravel().tolist(),
                                                     "shape": [2, 4]}}]}
        assert put(json.dumps(doc).encode(), "data.json") == "real: data.json (3 samples)"
        np.testing.assert_allclose(engine.sample_input("lr", rows=3, seed=None), X[:3])
        # a path: read where the engine is
        path = tmp_path / "iris.csv"
        path.write_bytes(iris["csv"])
        assert engine.set_inputs("lr", path) == "real: iris.csv (150 samples)"
        # what is wrong, said
        with_label = pd.DataFrame(X, columns=list("abcd")).assign(species="setosa")
        with pytest.raises(InputValidationError, match=r"4 features.*1 column\(s\) that are "
                                                       r"not numbers, \['species'\]"):
            put(with_label.to_csv(index=False).encode(), "labelled.csv")
        with pytest.raises(InputValidationError, match=r"4 features per row.*3 numeric "
                                                       r"column\(s\) \['0', '1', '2'\]"):
            put(pd.DataFrame(X[:, :3]).to_csv(index=False).encode(), "narrow.csv")
        wide = pd.DataFrame(np.zeros((2, 200)))   # 200 columns: 8 named, the rest counted
        with pytest.raises(InputValidationError, match=r"200 numeric column\(s\) \['0', '1', "
                                                       r"'2', '3', '4', '5', '6', '7', … 192 more\]"):
            put(wide.to_csv(index=False).encode(), "wide.csv")
        narrow = io.BytesIO()
        np.save(narrow, X[:, :3])
        with pytest.raises(InputValidationError, match=r"samples of shape \[3\].*\[4\] per row"):
            put(narrow.getvalue(), "narrow.npy")
        with pytest.raises(InputValidationError, match="beyond float32's range"):
            big = io.BytesIO()
            np.save(big, np.full((2, 4), 1e300))
            put(big.getvalue(), "big.npy")
        with pytest.raises(InputValidationError, match="b64 values are not read"):
            put(json.dumps({"data": [{"X": {"b64": "AAAA"}}]}).encode(), "b.json")
        with pytest.raises(InputValidationError, match="no input 'X'"):
            put(json.dumps({"data": [{"input": [1, 2, 3, 4]}]}).encode(), "c.json")
        with pytest.raises(InputValidationError, match=r"read from \.npy, \.npz"):
            put(b"...", "x.png")
        assert engine.input_source("lr") == "real: iris.csv (150 samples)"  # kept as it was


def test_inputs_follow_the_model_they_belong_to(tmp_path):
    from onnx import TensorProto
    with Engine(demo_models=False) as engine:
        engine.load_model(identity_model(), name="m")
        buf = io.BytesIO()
        np.save(buf, np.arange(30, dtype=np.float32).reshape(10, 3))
        engine.set_inputs("m", buf.getvalue(), "rows.npy")
        # a new version with the same inputs keeps them; another interface drops them
        engine.load_model(identity_model(), name="m", replace=True)
        assert engine.input_source("m") == "real: rows.npy (10 samples)"
        # a new version taking doubles: the samples are cast to them (traffic goes on)
        engine.load_model(identity_model(TensorProto.DOUBLE), name="m", replace=True)
        assert engine.input_source("m") == "real: rows.npy (10 samples)"
        x = engine.sample_input("m", rows=2)
        assert x.dtype == np.float64 and engine.predict("m", x).outputs["y"].dtype == np.float64
        engine.load_model(identity_model(TensorProto.FLOAT, ["N", 5]), name="m", replace=True)
        assert engine.input_source("m").startswith("generated")
        engine.load_model(identity_model(), name="m", replace=True)
        engine.set_inputs("m", buf.getvalue(), "rows.npy")
        engine.clear_inputs("m")
        assert engine.input_source("m").startswith("generated")
        engine.set_inputs("m", buf.getvalue(), "rows.npy")
        engine.unload_model("m")
        engine.load_model(identity_model(), name="m")
        assert engine.input_source("m").startswith("generated")  # unloaded: gone with it
        # warm-up sends the real samples
        engine.set_inputs("m", buf.getvalue(), "rows.npy")
        report = engine.warmup("m", iterations=2, batch_sizes=[1, 4])
        assert len(report.frame) > 0


def test_remote_engine_sends_the_file_from_where_the_notebook_is(tmp_path):
    with Engine(demo_models=False) as engine:
        engine.load_model(identity_model(), name="m")
        server = EngineServer(engine, port=0).start()
        client = RemoteEngine(server.url)
        try:
            path = tmp_path / "rows.npy"
            np.save(path, np.ones((5, 3), np.float32))
            assert client.set_inputs("m", path) == "real: rows.npy (5 samples)"
            assert client.input_source("m") == "real: rows.npy (5 samples)"
            np.testing.assert_array_equal(engine.sample_input("m", rows=2), np.ones((2, 3)))
            client.clear_inputs("m")
            assert client.input_source("m").startswith("generated")
        finally:
            client.close()
            server.close()


def test_a_file_that_would_unpack_past_the_bound_is_refused_before_it_is_read():
    """A compressed .npz of zeros unpacks to far more than its size: refused on the sizes
    its zip directory declares, before numpy allocates anything; broken perf_analyzer
    requests and a bare number are refused with the reason."""
    with Engine(demo_models=False) as engine:
        engine.load_model(identity_model(), name="m")
        buf = io.BytesIO()
        np.savez_compressed(buf, x=np.zeros((6_000_000, 3), np.float32))  # 72 MB unpacked
        assert len(buf.getvalue()) < 1_000_000
        with pytest.raises(InputValidationError, match="unpacks to 68.7 MiB, over the 64"):
            engine.set_inputs("m", buf.getvalue(), "zeros.npz")
        bad = {"data": [{"x": {"content": [1, 2, 3, 4], "shape": [1, 3]}}]}
        with pytest.raises(InputValidationError, match="does not fill its shape"):
            engine.set_inputs("m", json.dumps(bad).encode(), "bad.json")
        mixed = {"data": [{"x": [1, 2, 3]}, {"x": [[1, 2], [3, 4]]}]}
        with pytest.raises(InputValidationError, match="do not fit together|has shape"):
            engine.set_inputs("m", json.dumps(mixed).encode(), "mixed.json")
        # a header that declares far more than the file holds (1 PiB was a 500 MemoryError)
        small = io.BytesIO()
        np.save(small, np.zeros((4, 3), np.float32))
        huge = small.getvalue().replace(b"(4, 3)", b"(%d, 3)" % 2**48)
        with pytest.raises(InputValidationError, match=r"declares an array of shape "
                                                       r"\[281474976710656, 3\] float32"):
            engine.set_inputs("m", huge, "huge.npy")
        packed = io.BytesIO()   # (the same array in an .npz: its member is checked too)
        with zipfile.ZipFile(packed, "w", zipfile.ZIP_STORED) as z:
            z.writestr("x.npy", huge)
        with pytest.raises(InputValidationError, match=r"^huge.npz: x.npy: its header declares "
                                                       r"an array of shape \[281474976710656"):
            engine.set_inputs("m", packed.getvalue(), "huge.npz")
        one = io.BytesIO()
        np.save(one, np.float32(3.0))
        with pytest.raises(InputValidationError, match="a single number"):
            engine.set_inputs("m", one.getvalue(), "one.npy")


def test_tables_and_json_that_would_decode_past_the_bound_are_refused_before_decoding(
        monkeypatch, tmp_path):
    """An adversary's 0.87 MiB Parquet file of zeros (50M rows) decoded to 5.3 GB in the
    server before the 64 MiB check; a 14 MiB perf_analyzer file of empty lists took 408 MiB.
    What a file would take decoded is now read from its footer (Parquet) or counted in its
    text (CSV lines and columns, JSON separators) and refused before anything is decoded
    (the bound made small here, so the files stay small)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from core.errors import ConfigError
    from core.models import inputs as inputs_mod
    monkeypatch.setattr(inputs_mod, "MAX_DECODED_BYTES", 8 * 2**20)

    def never(*a, **k):
        raise AssertionError("decoded before its size was checked")
    with Engine(demo_models=False) as engine:
        engine.load_model(identity_model(), name="m")
        buf = io.BytesIO()
        n = 1_000_000   # 3 columns: 24 MB as float64
        pq.write_table(pa.table({c: np.zeros(n) for c in "abc"}), buf, compression="zstd")
        assert len(buf.getvalue()) < 2**20
        csv = b"a,b,c\n" + b"0,0,0\n" * n
        lists = b'{"data": [' + b",".join([b"[]"] * 200_000) + b"]}"
        with monkeypatch.context() as m:
            m.setattr(pd, "read_parquet", never)
            m.setattr(pd, "read_csv", never)
            m.setattr(json, "loads", never)
            for data, name, words in [
                    (buf.getvalue(), "zeros.parquet", "1,000,000 rows of 3 columns would take "
                                                      "~23 MiB to read, over the 8 MiB"),
                    (csv, "zeros.csv", "1,000,002 rows of 3 columns"),
                    (lists, "lists.json", "its values parsed would take ~23 MiB")]:
                with pytest.raises(InputValidationError, match=words):
                    engine.set_inputs("m", data, name)
        # within the bound, the same kinds still read
        small = io.BytesIO()
        pq.write_table(pa.table({c: np.arange(5.0) for c in "abc"}), small)
        assert "5 samples" in engine.set_inputs("m", small.getvalue(), "small.parquet")
        assert "5 samples" in engine.set_inputs("m", b"a,b,c\n" + b"1,2,3\n" * 5, "s.csv")
        # A path that is not a regular file is not read (its size says nothing: /dev/zero)
        with pytest.raises(ConfigError, match="not a regular file"):
            engine.set_inputs("m", "/dev/zero", filename="z.npy")
        with pytest.raises(ConfigError, match="cannot read sample inputs from .*missing"):
            engine.set_inputs("m", tmp_path / "missing.npy")


def test_columns_that_are_not_numbers_are_named_without_being_decoded(monkeypatch):
    """A column of short strings takes ~60 bytes a cell once decoded (16M cells of "ab":
    ~1 GB from a 50 MB CSV), within the 8-bytes-a-cell estimate. Such columns are now named
    from the first rows (CSV) or the schema (Parquet) and refused; the whole file is only
    ever decoded as numbers."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    calls = []
    read_csv, read_parquet = pd.read_csv, pd.read_parquet

    def spy_csv(*a, **k):
        calls.append(k)
        return read_csv(*a, **k)
    monkeypatch.setattr(pd, "read_csv", spy_csv)
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: calls.append("parquet")
                        or read_parquet(*a, **k))
    with Engine(demo_models=False) as engine:
        engine.load_model(identity_model(), name="m")
        text = b"a,b,c,name\n" + b"1,2,3,ab\n" * 1000
        with pytest.raises(InputValidationError,
                           match=r"1 column\(s\) that are not numbers, \['name'\], and 3 "
                                 r"numeric column\(s\) \['a', 'b', 'c'\]"):
            engine.set_inputs("m", text, "t.csv")
        # only the numbers-only read and looks at the first row(s)
        assert all(k.get("dtype") is np.float64 or k.get("nrows") in (1, 100) for k in calls)
        late = b"a,b,c\n" + b"1,2,3\n" * 200 + b"1,x,3\n"   # past the rows looked at
        with pytest.raises(InputValidationError, match="not every value is a number"):
            engine.set_inputs("m", late, "late.csv")
        buf = io.BytesIO()
        pq.write_table(pa.table({"a": [1.0], "b": [2.0], "c": [3.0], "name": ["ab"]}), buf)
        with pytest.raises(InputValidationError, match=r"not numbers, \['name'\]"):
            engine.set_inputs("m", buf.getvalue(), "t.parquet")
        assert "parquet" not in calls
        # a pandas index is not a column (a string index id was refused as one)
        indexed = io.BytesIO()
        pd.DataFrame({"a": [1.0, 2.0], "b": [2.0, 3.0], "c": [3.0, 4.0],
                      "sample_id": ["s1", "s2"]}).set_index("sample_id").to_parquet(indexed)
        assert "2 samples" in engine.set_inputs("m", indexed.getvalue(), "indexed.parquet")
        assert "5 samples" in engine.set_inputs("m", b"a,b,c\n" + b"1,2,3\n" * 5, "ok.csv")


def test_a_table_says_how_it_was_read_a_headerless_csv_keeps_its_first_row():
    """A newcomer (helper): a CSV without a header lost its first row unsaid (read as column
    names: 'real: g.csv (2 samples)' from 3), and an empty cell became NaN unsaid. A first
    row of numbers is a sample now (pandas' own 0, 1, 2 names still a header); missing
    values are said with the source, as they are sent."""
    from onnx import TensorProto
    import pyarrow as pa
    import pyarrow.parquet as pq
    with Engine(demo_models=False) as engine:
        engine.load_model(identity_model(), name="m")
        text = engine.set_inputs("m", b"1,2,3\n4,5,6\n7,8,9\n", "g.csv")
        assert text == "real: g.csv; no header row, so its first row is a sample (3 samples)"
        assert engine.real_inputs("m").arrays["x"][0].tolist() == [1, 2, 3]
        # a repeated number in the first row (pandas renames the second "1" to "1.1", the
        # second "0.5" to "0.5.1": a reviewer), an empty first cell ("Unnamed: 0")
        assert "2 samples" in engine.set_inputs("m", b"1,1,3\n4,5,6", "dup.csv")
        text = engine.set_inputs("m", b"0.5,0.5,0.5\n1,2,3\n", "halves.csv")
        assert text == "real: halves.csv; no header row, so its first row is a sample (2 samples)"
        text = engine.set_inputs("m", b",2,3\n1,2,3\n", "gap.csv")
        assert text == ("real: gap.csv; no header row, so its first row is a sample; 1 missing "
                        "value sent as NaN (2 samples)")
        # pandas' default names: a header, as DataFrame(array).to_csv(index=False) writes
        named = pd.DataFrame(np.arange(6.0).reshape(2, 3)).to_csv(index=False).encode()
        assert engine.set_inputs("m", named, "df.csv") == \
            "real: df.csv; its first row, 0, 1, 2..., read as column names (2 samples)"
        text = engine.set_inputs("m", b"a,b,c\n1,,3\n4,5,6\n", "f.csv")
        assert text == "real: f.csv; 1 missing value sent as NaN (2 samples)"
        assert np.isnan(engine.real_inputs("m").arrays["x"][0, 1])
        buf = io.BytesIO()
        pq.write_table(pa.table({"a": [1.0, None], "b": [None, 3.0], "c": [1.0, 2.0]}), buf)
        assert "2 missing values sent as NaN" in engine.set_inputs("m", buf.getvalue(),
                                                                   "p.parquet")
        # an integer input takes no NaN: refused, as before
        engine.load_model(identity_model(TensorProto.INT64), name="ids")
        with pytest.raises(InputValidationError):
            engine.set_inputs("ids", b"a,b,c\n1,,3\n", "i.csv")


def test_integer_inputs_take_only_values_that_survive_the_cast():
    """A float file for an int64 input was truncated (0.5 -> 0) and an int32 input wrapped
    2**40 without a word: values that would change when cast are refused, named; whole
    numbers in any dtype are taken."""
    from core.models import ModelInfo, TensorSpec, read_inputs
    spec = TensorSpec("ids", "tensor(int32)", np.dtype("int32"), ("N", 2))
    info = ModelInfo("ids-model", "0" * 64, 1, (spec,), (spec,), {"": 17}, 8, "test",
                     "dynamic", "test")

    def npy(a) -> bytes:
        buf = io.BytesIO()
        np.save(buf, a)
        return buf.getvalue()

    taken = read_inputs(npy(np.array([[1.0, 2.0], [3.0, -4.0]])), "whole.npy", info)
    assert taken.arrays["ids"].dtype == np.int32
    assert taken.arrays["ids"].tolist() == [[1, 2], [3, -4]]
    assert taken.describe() == "real: whole.npy; cast float64 to int32 (2 samples)"  # said
    same = read_inputs(npy(np.array([[1, 2]], np.int32)), "same.npy", info)
    assert same.describe() == "real: same.npy (1 sample)"
    with pytest.raises(InputValidationError, match=r"int32, and 1 value \(e\.g\. 0\.5\)"):
        read_inputs(npy(np.array([[1.0, 0.5], [3.0, 4.0]])), "halves.npy", info)
    with pytest.raises(InputValidationError, match=r"2 values \(e\.g\. 1099511627776\)"):
        read_inputs(npy(np.array([[2**40, 1], [2, 2**40]])), "wide.npy", info)
    with pytest.raises(InputValidationError, match=r"e\.g\. nan: a missing value"):
        read_inputs(pd.DataFrame([[1.0, np.nan]]).to_csv(index=False).encode(), "gap.csv",
                    info)
    with pytest.raises(InputValidationError, match="complex numbers"):
        read_inputs(npy(np.array([[1 + 2j, 1]])), "complex.npy", info)
    # A CSV for an integer input is read as integers: ids past 2**53 are kept exact (read as
    # float64 first, 2**53 + 1 became 2**53 before any check saw it)
    wide = TensorSpec("ids", "tensor(int64)", np.dtype("int64"), ("N", 2))
    ids = ModelInfo("ids64", "0" * 64, 1, (wide,), (wide,), {"": 17}, 8, "test", "dynamic",
                    "test")
    big = 2**53 + 1
    got = read_inputs(f"a,b\n{big},7\n1,{2**62 + 3}\n".encode(), "ids.csv", ids)
    assert got.arrays["ids"].tolist() == [[big, 7], [1, 2**62 + 3]]
    assert got.arrays["ids"].dtype == np.int64
    with pytest.raises(InputValidationError, match=r"e\.g\. 0\.5"):   # still refused, named
        read_inputs(b"a,b\n1,0.5\n", "half.csv", ids)
    unsigned = TensorSpec("ids", "tensor(uint64)", np.dtype("uint64"), ("N", 2))
    uids = ModelInfo("ids-u64", "0" * 64, 1, (unsigned,), (unsigned,), {"": 17}, 8, "test",
                     "dynamic", "test")
    past = 2**63 + 1   # (past int64 as well)
    assert read_inputs(f"a,b\n{past},1\n".encode(), "u.csv", uids).arrays["ids"].tolist() == \
        [[past, 1]]
    flag = TensorSpec("on", "tensor(bool)", np.dtype("bool"), ("N", 2))
    flags = ModelInfo("flags", "0" * 64, 1, (flag,), (flag,), {"": 17}, 8, "test", "dynamic",
                      "test")
    assert read_inputs(npy(np.array([[0, 1]])), "ok.npy", flags).arrays["on"].tolist() == \
        [[False, True]]
    with pytest.raises(InputValidationError, match=r"\(e\.g\. 2\).*give 0 or 1"):
        read_inputs(npy(np.array([[0, 2]])), "two.npy", flags)


def _scalar_model() -> bytes:
    from onnx import TensorProto, helper
    from tests.helpers import make_model
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    return make_model([x], [y], [helper.make_node("Neg", ["x"], ["y"])]).SerializeToString()


def test_a_scalar_models_real_inputs_and_samples_keep_their_shape():
    """A model whose input is one number (shape []): its real inputs were drawn as numpy
    scalars ("Cannot set flags on array scalars"), and through the engine server a sample
    came back as shape [1], which the model then refused."""
    engine = Engine(demo_models=False)
    server = EngineServer(engine, port=0).start()
    remote = RemoteEngine.connect(server.url, timeout_s=WAIT_S)
    try:
        remote.load_model(_scalar_model(), name="s")
        generated = remote.sample_input("s")
        assert generated.shape == ()
        assert remote.predict("s", generated).outputs["y"] == -generated
        buf = io.BytesIO()
        np.save(buf, np.array([1.0, 2.0, 3.0], np.float32))
        remote.set_inputs("s", buf.getvalue(), "x.npy")
        for local in (engine, remote):
            x = local.sample_input("s", seed=1)
            assert x.shape == () and float(x) in (1.0, 2.0, 3.0)
            assert local.predict("s", x).outputs["y"] == -x
    finally:
        remote.close()
        server.close()
        engine.close()

