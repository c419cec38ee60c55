"""Every verb given bad arguments: exit status 2, one ``error:`` line naming what was wrong (the
value the user typed), no traceback, and nothing written anywhere: inputs are checked before any
image is embedded or any file created.

The table is the contract; the summary line (``pytest -s``) counts invocations, crashes and
half-written outputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike.cli.main import app
from lookalike.embed.store import EmbeddingSet
from lookalike.pipeline.indexing import build_index

EMB, IDX, IMAGES, SUB, YAML, CKPT = "EMB", "IDX", "IMAGES", "SUB", "YAML", "CKPT"
TINY = ["--model", "timm:test_resnet", "--weights", "none", "--pool", "gap", "--workers", "0"]

# (arguments, text the one error line must contain); the capitals name the fixtures below.
BAD_INVOCATIONS: list[tuple[list[str], str]] = [
    # embed
    (["embed", IMAGES, "-o", "out", *TINY, "--device", "banana"], "'banana'"),
    (["embed", IMAGES, "-o", "out", *TINY, "--device", "cuda:7"], "'cuda:7'"),
    (["embed", IMAGES, "-o", "out", *TINY, "--batch-size", "0"], "batch_size"),
    (["embed", IMAGES, "-o", "out", *TINY, "--shard-size", "-1"], "got -1"),
    (["embed", IMAGES, "-o", "out", *TINY, "--workers", "-1"], "num_workers"),
    (["embed", IMAGES, "-o", "out", *TINY, "--tta", "banana"], "'banana'"),
    (["embed", IMAGES, "-o", "out", "--checkpoint", CKPT, "--model", "timm:resnet18"], "not both"),
    (["embed", "/no/such/images", "-o", "out", *TINY], "/no/such/images"),
    (["embed", IMAGES, *TINY], "Missing option '--output'"),
    (["embed", IMAGES, "-o", "out", *TINY, "--split", "nosuch"], "'nosuch'"),
    (["embed", IMAGES, "-o", "out", "--bogus"], "No such option: --bogus"),
    # index
    (["index", EMB, "-o", "out", "--threshold", "nan"], "got nan"),
    (["index", EMB, "-o", "out", "--threshold", "inf"], "got inf"),
    (["index", EMB, "-o", "out", "--device", "banana"], "'banana'"),
    (["index", EMB, "-o", "out", "--device", "cuda"], "'cuda'"),
    (["index", EMB, "-o", "out", "--kind", "nope"], "'nope'"),
    (["index", EMB, "-o", "out", "--metric", "nope"], "'nope'"),
    (["index", EMB, "-o", "out", "-p", "nlist"], "'nlist'"),
    (["index", "/no/such/embeddings", "-o", "out"], "/no/such/embeddings"),
    # search
    (["search", IDX, EMB, "-o", "r.csv", "--threshold", "nan"], "got nan"),
    (["search", IDX, EMB, "-o", "r.csv", "--threshold", "-inf"], "got -inf"),
    (["search", IDX, EMB, "-o", "r.csv", "--threshold", "0.5", "--no-threshold"], "not both"),
    (["search", IDX, EMB, "-o", "r.csv", "-k", "-5"], "got -5"),
    (["search", IDX, EMB, "-o", "r.csv", "-k", "0"], "got 0"),
    (["search", IDX, EMB, "-o", "r.csv", "-k", "abc"], "'-k'"),
    (["search", IDX, EMB, "-o", "r.txt"], "r.txt"),
    (["search", IDX, IMAGES, "-o", "r.csv", *TINY, "--device", "banana"], "'banana'"),
    (["search", IDX, EMB, "-o", "r.csv", "--query-embeddings-dir", "q"], "query_embeddings_dir"),
    (["search", IDX, IMAGES, "-o", "r.csv", "--checkpoint", CKPT, "--weights", "none"],
     "not both"),
    (["search"], "Missing argument"),
    # evaluate
    (["evaluate"], "nothing to evaluate"),
    (["evaluate", "--embeddings", EMB, "--threshold", "nan"], "got nan"),
    (["evaluate", "--embeddings", EMB, "k=-5"], "got -5"),
    (["evaluate", "--embeddings", EMB, "k=0"], "got 0"),
    (["evaluate", "--source", IMAGES, "--embeddings", EMB], "source and embeddings"),
    (["evaluate", "--embeddings", EMB, "index.device=banana"], "'banana'"),
    (["evaluate", "--embeddings", EMB, "embed.device=cuda:7"], "'cuda:7'"),
    (["evaluate", "--embeddings", EMB, "-o", "a", "output=b"], "set twice"),
    (["evaluate", "--embeddings", EMB, "--threshold", "0.3", f"rejection.index={IDX}"],
     "not both"),
    (["evaluate", "--embeddings", EMB, "--model", "timm:resnet18", "--checkpoint", CKPT],
     "not both"),
    (["evaluate", "-c", YAML], "bad.yaml"),
    (["evaluate", "--embeddings", EMB, "recall_ks=[0]"], "recall_ks"),
    (["evaluate", "--embeddings", EMB, "index.kind=nope"], "'nope'"),
    (["evaluate", "--embeddings", EMB, "--protocol", "per_class", "protocol_args={bogus: 1}"],
     "'bogus'"),
    (["evaluate", "--embeddings", EMB, "--protocol", "per_class",
      "protocol_args={query_fraction: nan}"], "query_fraction"),
    (["evaluate", "--embeddings", EMB, "--protocol", "all_vs_all", "postprocess.qe=true",
      "postprocess.depth=-5"], "postprocess.depth"),
    # submission and submit
    (["submission", IDX, EMB, "-o", "s.csv", "--threshold", "nan"], "got nan"),
    (["submission", IDX, EMB, "-o", "s.csv", "-k", "-5"], "got -5"),
    (["submission", IDX, EMB, "-o", "s.txt"], "s.txt"),
    (["submission", IDX, EMB, "-o", "s.csv", "--predict", "banana"], "'banana'"),
    (["submit", SUB, "--url", "http://127.0.0.1:9/submit"], "--allow-insecure"),
    (["submit", SUB, "--url", "ftp://127.0.0.1/submit"], "not a valid"),
    (["submit", "/no/such/sub.csv", "--url", "https://127.0.0.1:9/"], "/no/such/sub.csv"),
    (["submit", SUB, "--url", "https://127.0.0.1:9/", "--timeout", "0"], "timeout"),
    # tune-threshold
    (["tune-threshold", "--query-embeddings", EMB, "--gallery-embeddings", EMB,
      "--index", "/no/such/index"], "/no/such/index"),
    (["tune-threshold", "--query-embeddings", "/no/such/q", "--gallery-embeddings", EMB],
     "/no/such/q"),
    (["tune-threshold", "--query-embeddings", EMB, "--gallery-embeddings", EMB,
      "--objective", "map@0"], "got 0"),
    # train
    (["train"], "data.source is not set"),
    (["train", f"data.source={IMAGES}", "trainer.accelerator=gpu"], "needs CUDA"),
    (["train", f"data.source={IMAGES}", "trainer.accelerator=banana"], "'banana'"),
    (["train", "-o", "a", "output=b"], "set twice"),
    (["train", "-c", YAML], "bad.yaml"),
    # report, demo, and the command itself
    (["report", "/no/such/run"], "/no/such/run"),
    (["demo", "--device", "banana"], "'banana'"),
    (["nope"], "No such command 'nope'"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Valid inputs the bad invocations point at, written once, outside the working folder."""
    base = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    ids = [f"g{i}" for i in range(12)]
    embeddings = EmbeddingSet(
        rng.normal(size=(12, 8)).astype(np.float32), ids, ids, [str(i // 3) for i in range(12)]
    )
    embeddings.save(base / "emb")
    build_index(embeddings, base / "idx")
    for c in range(3):
        (base / "images" / f"c{c}").mkdir(parents=True)
        for i in range(3):
            image = Image.new("RGB", (16, 16), (80 * c, 20 * i, 0))
            image.save(base / "images" / f"c{c}" / f"{i}.png")
    (base / "sub.csv").write_text("Id,Predicted\nq0,a b\n")
    (base / "bad.yaml").write_text("k: [unclosed\n")
    return {
        EMB: str(base / "emb"), IDX: str(base / "idx"), IMAGES: str(base / "images"),
        SUB: str(base / "sub.csv"), YAML: str(base / "bad.yaml"), CKPT: str(base / "model"),
    }


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working folder: default outputs (runs/evaluate ...) would land here."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOOKALIKE_SUBMIT_TOKEN", "t0ken")
    yield tmp_path


def _fill(args: list[str], inputs: dict[str, str]) -> list[str]:
    filled = []
    for arg in args:
        for name, path in inputs.items():
            arg = path if arg == name else arg.replace(f"={name}", f"={path}")
        filled.append(arg)
    return filled


def _snapshot(*folders: Path) -> set[Path]:
    return {path for folder in folders for path in folder.rglob("*")}


@pytest.mark.parametrize(
    "args,needle", BAD_INVOCATIONS, ids=[" ".join(a)[:60] for a, _ in BAD_INVOCATIONS]
)
def test_a_bad_invocation_is_one_error_line_and_writes_nothing(
    args: list[str], needle: str, inputs: dict[str, str], workdir: Path
) -> None:
    input_folder = Path(inputs[EMB]).parent
    before = _snapshot(workdir, input_folder)
    result = CliRunner().invoke(app, _fill(args, inputs))
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert len(errors) == 1 and needle in errors[0], result.output
    assert len(lines) == 1, result.output
    assert _snapshot(workdir, input_folder) == before  # nothing written, nothing created


def test_the_table_covers_every_verb() -> None:
    verbs = {args[0] for args, _ in BAD_INVOCATIONS}
    assert {"embed", "index", "search", "evaluate", "submission", "submit", "tune-threshold",
            "train", "report", "demo"} <= verbs
    print(f"\nbad invocations: {len(BAD_INVOCATIONS)} over {len(verbs)} verbs")
    assert len(BAD_INVOCATIONS) >= 40
