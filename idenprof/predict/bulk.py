"""Bulk inference: classify a folder, a glob or a list of files and URLs (millions of them) with a
trained model in an Apache Beam pipeline, and write the rows `infer.py --output` writes, as sharded
JSON Lines or Parquet.

    job = BulkJob(sources=["photos/", "urls.txt"], output=Path("rows/"))
    summary = run_bulk(job)       # Beam's DirectRunner, in this process
    run_bulk(replace(job, pipeline_args=["--runner=FlinkRunner", "--flink_master=host:8081"]))

The driver lists the inputs and loads the model once to check it; the pipeline is
inputs -> RunInference (idenprof.predict.bulk_worker: the model's files travel with the pipeline, each
worker loads it once and predicts `batch_size` inputs at a time with Classifier.predict_files, as
infer.py does) -> rows -> shards. Fetching, decoding, resizing and the rows are infer.py's own code.
An input that cannot be read becomes a row with its error. Beam is an optional extra
(`pip install 'idenprof[bulk]'`); this module imports it only when a job runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from idenprof.errors import ConfigError, one_line
from idenprof.predict.classifier import checked_coverage, load
from idenprof.predict.inputs import expand_inputs
from idenprof.predict.outputs import json_line
from idenprof.predict.remote import is_url

LIST_SUFFIX = ".txt"  # an input file with this suffix lists inputs, one path or URL a line
OUTPUT_FORMATS = ("jsonl", "parquet")
SHARD_PREFIX = "rows"
SHARD_TEMPLATE = "-SSSSS-of-NNNNN"  # Beam's: rows-00000-of-00004.jsonl


@dataclass(frozen=True)
class BulkJob:
    """What to classify, with which model, where the rows go and where the job runs.

    Attributes:
        sources: folders (their image files, subfolders included), globs, image files, http(s)
            URLs and `.txt` files listing files or URLs (one a line; blank lines and lines
            starting with # skipped).
        output: the folder the shards are written to: new, or empty.
        output_format: "jsonl" or "parquet".
        rows_per_shard: about this many rows per shard (ceil(inputs / rows_per_shard) shards).
        pipeline_args: Beam pipeline options, e.g. ["--runner=FlinkRunner", "--flink_master=host:8081"];
            none: the DirectRunner, in this process.
        model, labels, runs_dir, min_confidence, none_threshold, coverage: as for
            idenprof.predict.classifier.load (the default model: infer.py's).
        top: classes per row; tta: average each photo with its mirror; batch_size: images per
            model call.
    """

    sources: list[str]
    output: Path
    output_format: str = "jsonl"
    rows_per_shard: int = 100_000
    pipeline_args: list[str] = field(default_factory=list)
    batch_size: int = 32
    model: str | None = None
    labels: str | None = None
    runs_dir: Path = Path("runs")
    top: int = 5
    tta: bool = False
    min_confidence: float | None = None
    none_threshold: float | None = None
    coverage: float | None = None


@dataclass(frozen=True)
class BulkSummary:
    """What a finished job wrote: `rows` rows (`errors` of them error rows) in `shards` files."""

    rows: int
    errors: int
    shards: list[Path]


def list_inputs(sources: list[str]) -> list[str]:
    """Every input of a job, each once, in source order: a folder's image files (subfolders
    included, sorted, as `infer.py --recursive` lists them), a glob's, an image file or URL as
    given, and the lines of a `.txt` list as written (checked only when predicted: a missing one
    becomes an error row).

    Raises:
        ConfigError: a source that is no file, folder, URL or matching glob, a folder without
            images, or an unreadable list.
    """
    inputs: list[str] = []
    for source in sources:
        if not is_url(source) and source.lower().endswith(LIST_SUFFIX) and os.path.isfile(source):
            inputs.extend(read_list(Path(source)))
            continue
        found, errors = expand_inputs([source], recursive=True)
        if errors:
            raise ConfigError(errors[0].message)
        inputs.extend(found)
    return list(dict.fromkeys(inputs))


def read_list(path: Path) -> list[str]:
    """The paths and URLs a list file names, one a line (blank and # lines skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read this list of inputs ({one_line(e)})") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def check_output_folder(path: Path) -> Path:
    """`path`, made when missing, when it is an empty folder we can write to.

    Raises:
        ConfigError: a file, a folder with files in it, or a folder that cannot be made or written.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if any(path.iterdir()):
            raise ConfigError(f"--output {path}: folder is not empty; name a new or empty folder")
        with tempfile.TemporaryFile(dir=path):
            pass
    except FileExistsError:
        raise ConfigError(f"--output {path}: is a file; name a folder for the shards") from None
    except OSError as e:
        raise ConfigError(f"--output {path}: cannot write there ({one_line(e)})") from None
    return path


def check_job(job: BulkJob) -> None:
    if job.output_format not in OUTPUT_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}, got {job.output_format!r}")
    for value, flag in ((job.rows_per_shard, "--rows-per-shard"), (job.batch_size, "--batch-size"),
                        (job.top, "--top")):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")


def row_schema():
    """The rows as an Arrow schema (the Parquet shards' columns): prediction_rows' keys, in order."""
    import pyarrow as pa

    return pa.schema([
        ("path", pa.string()),
        ("predictions", pa.list_(pa.struct([("class", pa.string()), ("probability", pa.float64())]))),
        ("unsure", pa.bool_()),
        ("none_score", pa.float64()),
        ("none_of_these", pa.bool_()),
        ("prediction_set", pa.struct([("classes", pa.list_(pa.string())), ("coverage", pa.float64())])),
        ("error", pa.string()),
    ])


# Beam's log lines that are not the user's to act on: a warning on import when Google Cloud's
# clients are missing, and one per model load when torch is (Beam 2.77 then loses `resource`).
BEAM_NOISE = ("apitools not found", "Resource module is not available")


@contextlib.contextmanager
def beam_logging():
    """Beam logs through the root logger: while a job runs, its warnings and errors go to stderr as
    "WARNING: ...", less BEAM_NOISE, and nothing is left configured after."""
    root = logging.getLogger()
    noise = logging.Filter()
    noise.filter = lambda record: not str(record.msg).startswith(BEAM_NOISE)
    handler = None
    if not root.handlers:  # else logging.warning() would install one of its own, for good
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        root.addHandler(handler)
    root.addFilter(noise)
    try:
        yield
    finally:
        root.removeFilter(noise)
        if handler is not None:
            root.removeHandler(handler)


def import_beam():
    try:
        import apache_beam
        import apache_beam.ml.inference.base  # noqa: F401
    except ImportError:
        raise ConfigError("the bulk job runs on Apache Beam: pip install 'idenprof[bulk]' "
                          "(or -r requirements-dev.txt)") from None
    return apache_beam


def run_bulk(job: BulkJob) -> BulkSummary:
    """Run `job` to the end and summarise what it wrote. Inputs that cannot be read are error rows;
    the job stops only for what the user can fix (ConfigError, ModelFileError: a bad source, model,
    flag, pipeline option or output folder), and that before any photo is read."""
    check_job(job)
    inputs = list_inputs(job.sources)
    if not inputs:
        raise ConfigError("no inputs: the sources list nothing to classify")
    coverage = None if job.coverage is None else checked_coverage(job.coverage, "--coverage")
    classifier = load(job.model, labels=job.labels, runs_dir=job.runs_dir, min_confidence=job.min_confidence,
                      none_threshold=job.none_threshold, coverage=coverage)  # a bad model ends the job here
    with beam_logging():
        beam = import_beam()
        from apache_beam.options.pipeline_options import PipelineOptions

        try:  # a runner Beam does not know, or options it cannot parse, end the job here
            pipeline = beam.Pipeline(options=PipelineOptions(job.pipeline_args or ["--runner=DirectRunner"]))
        except (SystemExit, ValueError) as e:
            raise ConfigError(f"bad pipeline options {' '.join(job.pipeline_args)} ({one_line(e)})") from None
        check_output_folder(job.output)
        write_rows(pipeline, job, inputs, classifier)
    return summarize(job.output)


def write_rows(pipeline, job: BulkJob, inputs: list[str], classifier) -> None:
    """Run `pipeline` (a beam.Pipeline) as `inputs` -> RunInference with `classifier`'s model ->
    rows -> shards in job.output."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import RunInference

    from idenprof.predict.bulk_worker import ClassifierHandler, model_files

    handler = ClassifierHandler(
        model_files(classifier.model_path, None if job.labels is None else Path(job.labels)),
        classifier.model_path.name, job.top, job.tta, batch_size=job.batch_size,
        # The driver's, so every worker answers alike whatever it finds beside its copy.
        thresholds={"min_confidence": classifier.min_confidence, "none_threshold": classifier.none_threshold,
                    "coverage": classifier.coverage})
    prefix = str(Path(job.output).resolve() / SHARD_PREFIX)
    shards = {"num_shards": math.ceil(len(inputs) / job.rows_per_shard), "shard_name_template": SHARD_TEMPLATE,
              "file_name_suffix": f".{job.output_format}"}
    with pipeline:
        rows = pipeline | "inputs" >> beam.Create(inputs) | "predict" >> RunInference(handler)
        if job.output_format == "parquet":
            rows | "write" >> beam.io.WriteToParquet(prefix, schema=row_schema(), **shards)
        else:
            (rows | "lines" >> beam.Map(lambda row: json_line(row).encode("utf-8"))
             | "write" >> beam.io.WriteToText(prefix, append_trailing_newlines=False, **shards))


def shard_paths(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob(f"{SHARD_PREFIX}-*-of-*.*"))


def summarize(folder: Path) -> BulkSummary:
    """Count the rows and error rows of the shards in `folder`."""
    rows = errors = 0
    for row in iter_rows(folder, columns=["error"]):
        rows += 1
        errors += row["error"] is not None
    return BulkSummary(rows, errors, shard_paths(folder))


def iter_rows(folder: Path, columns: list[str] | None = None):
    """The rows of a job's shards (JSON Lines or Parquet), shard by shard: dicts of `columns`
    (default: all)."""
    for shard in shard_paths(folder):
        if shard.suffix == ".parquet":
            import pyarrow.parquet as pq

            yield from pq.read_table(shard, columns=columns).to_pylist()
        else:
            with open(shard, encoding="utf-8") as lines:
                yield from (json.loads(line) for line in lines)


def read_rows(folder: Path) -> list[dict]:
    """Every row of a job's shards (JSON Lines or Parquet), shard by shard."""
    return list(iter_rows(folder))
