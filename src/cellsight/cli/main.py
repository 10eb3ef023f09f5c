"""`cellsight`: train a station's model, evaluate it honestly, inspect images.

A thin layer: every command parses its options, shows progress and calls `cellsight.workflows`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import JsonValue
from rich.table import Table

from cellsight import __version__
from cellsight.calibration.cost_model import CostTerms
from cellsight.cli.dataset import dataset_app
from cellsight.cli.errors import user_errors
from cellsight.cli.line import line_app
from cellsight.cli.progress import console, progress_bars
from cellsight.cli.progress import fail as _fail
from cellsight.cli.rescore import rescore
from cellsight.cli.serve import serve, token_app
from cellsight.cli.synth import synth
from cellsight.errors import ConfigError

app = typer.Typer(
    name="cellsight",
    help="AI visual inspection for battery and solar-cell lines. Start with `cellsight train --help`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _parse_options(pairs: list[str]) -> dict[str, JsonValue]:
    """`key=value` pairs; a value is JSON where it parses (numbers, lists, objects), else a string. The
    detector's settings validate them (`DetectorSettings.from_options`)."""
    options: dict[str, JsonValue] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option expects key=value, got {pair!r}")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    return options


@app.command()
@user_errors
def train(
    data: Annotated[str, typer.Option(help="Data set: a folder in MVTec layout, a CSV manifest, or 'elpv'.")],
    out: Annotated[Path, typer.Option(help="Model file to write (safetensors + JSON metadata).")],
    detector: Annotated[
        str, typer.Option(
            help="Detector: patchcore (good-only), rules or classical (rule-based), supervised, hybrid or ensemble."
        )
    ] = "patchcore",
    backbone: Annotated[str | None, typer.Option(help="timm backbone (deep detectors).")] = None,
    image_size: Annotated[int | None, typer.Option(help="Working resolution in pixels (square; PatchCore "
                                                     "with --option aspect=keep: the shorter side).")] = None,
    overkill: Annotated[float, typer.Option(help="Target false-call rate on good images.")] = 0.05,
    escape: Annotated[
        float | None, typer.Option(help="Target escape rate instead (needs labelled defects).")
    ] = None,
    val_fraction: Annotated[
        float, typer.Option(help="Share of good train images held out to set the threshold (no val split, "
                                 "--folds 0 or a labelled detector).")
    ] = 0.15,
    folds: Annotated[
        int, typer.Option(help="No val split: fit on every good and set a good-only detector's threshold on "
                               "scores cross-fitted over this many folds (PatchCore leaves each image out); "
                               "0: hold out --val-fraction instead.")
    ] = 5,
    seed: Annotated[int, typer.Option(help="Seed for the hold-out split and sampling.")] = 0,
    model_version: Annotated[str | None, typer.Option(help="Version label stored in the model.")] = None,
    station: Annotated[
        str | None, typer.Option(help="Line station the model is for (the service refuses it at another one); "
                                      "with --costs, whose costs apply.")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(help="Detector setting as key=value, e.g. bank_size=8192 (repeatable); a wrong key lists them."),
    ] = None,
    costs: Annotated[
        Path | None, typer.Option(help="Cost model (YAML, or a line configuration with costs:): least-cost threshold.")
    ] = None,
    defect_rate: Annotated[
        float | None, typer.Option(help="Share of defective cells the station sees (with --costs; else the file's).")
    ] = None,
    fast: Annotated[
        bool, typer.Option("--fast", help="PatchCore's fast preset (HNSW search, smaller coreset pool); --option wins.")
    ] = False,
    ray: Annotated[bool, typer.Option("--ray", help="Fit PatchCore's per-image stage on Ray workers.")] = False,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray address for --ray; default: RAY_ADDRESS, else a local cluster.")
    ] = None,
) -> None:
    """Fit a detector (good images, or labelled ones for supervised/hybrid), set its threshold, write the model."""
    from cellsight.data.sources import load_dataset

    if fast and detector != "patchcore":
        raise ConfigError(f"--fast is PatchCore's preset; {detector} has none")
    dataset = load_dataset(data)  # a wrong path fails here, before torch is imported
    from cellsight.detectors.base import LearnsFrom
    from cellsight.workflows.train import TrainRequest
    from cellsight.workflows.train import train as run_train

    options = _parse_options(option or [])
    if fast:
        from cellsight.detectors.patchcore import FAST_PRESET

        options = {**FAST_PRESET, **options}
    if backbone is not None:
        options["backbone"] = backbone
    if image_size is not None:
        options["image_size"] = image_size
    terms = _cost_terms(costs, station, defect_rate) if costs is not None else None
    if terms is not None and escape is not None:
        raise ConfigError("--costs and --escape both set the threshold: choose one")
    policy = "cost" if terms is not None else "escape" if escape is not None else "overkill"
    request = TrainRequest.with_options(
        detector, options, policy=policy, target=escape if escape is not None else overkill,
        val_fraction=val_fraction, folds=folds, seed=seed, model_version=model_version, station=station,
        costs=terms,
    )
    console.print(f"training [bold]{detector}[/] on {dataset.name}: {len(dataset)} images")
    with progress_bars() as bars:
        result = run_train(dataset, out, request, bars, ray=(ray_address or "") if ray else None)
    cal = result.calibration
    what = "images (good and defective)" if result.detector.learns_from is LearnsFrom.LABELLED else "good images"
    goal = "the least expected cost" if cal.policy == "cost" else f"{cal.policy} {cal.target:.1%}"
    crossed = result.split.folds
    held = f"cross-fitted ({result.detector.cross_fit_method(crossed)})" if crossed else "held-out"
    console.print(
        f"fitted on {len(result.split.fit)} {what} in {result.fit_seconds:.1f} s; threshold set for "
        f"{goal} on {cal.n_good} good / {cal.n_defective} defective {held} images"
    )
    if result.naming_examples:
        per_class = ", ".join(f"{name} {count}" for name, count in result.naming_examples.items())
        console.print(f"learned defect names from labelled train defects: {per_class}")
    console.print(f"wrote {out} (sha256 {result.content_hash[:16]})")


def _cost_terms(path: Path, station: str | None, defect_rate: float | None) -> CostTerms:
    from cellsight.calibration.cost_model import load_costs, station_terms

    return station_terms(load_costs(path), station, defect_rate, where=str(path))[1]


@app.command()
@user_errors
def calibrate(
    model: Annotated[Path, typer.Option(help="Model file written by `cellsight train`.")],
    data: Annotated[str, typer.Option(help="The data set it was trained on (or one with a val/test split).")],
    costs: Annotated[Path, typer.Option(help="Cost model (YAML, or a line configuration with costs:).")],
    station: Annotated[str | None, typer.Option(help="The station whose costs apply.")] = None,
    defect_rate: Annotated[
        float | None, typer.Option(help="Share of defective cells the station sees (default: the file's).")
    ] = None,
    split: Annotated[
        str, typer.Option(help="heldout: the images the model was calibrated on at training time; or val, test.")
    ] = "heldout",
    out: Annotated[Path | None, typer.Option(help="Write the model with the least-cost threshold here.")] = None,
) -> None:
    """Choose the threshold with the least expected cost on held-out scores, beside the model's own target."""
    terms = _cost_terms(costs, station, defect_rate)  # a cost file's mistakes fail before torch is imported
    from cellsight.data.sources import load_dataset
    from cellsight.modelfile import load_model
    from cellsight.workflows.calibrate import calibrate_costs, save_recalibrated

    loaded = load_model(model)
    dataset = load_dataset(data)
    with progress_bars() as bars:
        result = calibrate_costs(loaded, dataset, terms, split, bars)
    table = Table(title=f"threshold by expected cost ({split} images: {result.optimum.n_good} good, "
                        f"{result.optimum.n_defective} defective)")
    for column in ("threshold", "raw", "overkill (good NG)", "escape (defective OK)", "expected cost / 1,000 cells"):
        table.add_column(column, justify="left" if column == "threshold" else "right")
    for row in (result.current, result.optimal):
        table.add_row(row.name, f"{row.threshold:.6g}", row.overkill.describe(), row.escape.describe(),
                      f"{row.cost_per_1000:,.2f}")
    console.print(table)
    console.print(
        f"costs: false call {terms.false_call:g}, escape {terms.escape:g}, defect rate {terms.defect_rate:.2%}"
    )
    if out is not None:
        digest = save_recalibrated(loaded, result, out)
        console.print(f"wrote {out} with the least-cost threshold (sha256 {digest[:16]})")


@app.command("eval")
@user_errors
def evaluate(
    model: Annotated[Path, typer.Option(help="Model file written by `cellsight train`.")],
    data: Annotated[str, typer.Option(help="Labelled data set: MVTec folder, CSV manifest, or 'elpv'.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write all metrics as JSON here.")] = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write the self-contained HTML report.")] = None,
    split: Annotated[str, typer.Option(help="Which split to evaluate on.")] = "test",
    batch_size: Annotated[int, typer.Option(help="Images per inference batch.")] = 16,
    lang: Annotated[
        str | None, typer.Option(help="Language of the HTML report: en, zh_CN, de (default: from LANG).")
    ] = None,
) -> None:
    """Score a labelled split: AUROC, AP, F1max, escape and overkill with 95% intervals, report."""
    from cellsight.data.sources import load_dataset
    from cellsight.modelfile import load_model
    from cellsight.reporting import write_evaluation_html
    from cellsight.workflows.evaluate import evaluate as run_eval

    loaded = load_model(model)
    dataset = load_dataset(data)
    with progress_bars() as bars:
        report = run_eval(loaded, dataset, split, batch_size, bars("inspect", len(dataset.select(split=split))))
    op = report.operating_point
    table = Table(title=f"{loaded.detector.name} on {report.dataset}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("image AUROC", f"{report.image_auroc:.4f}")
    table.add_row("image AP", f"{report.image_ap:.4f}")
    table.add_row("image F1max", f"{report.image_f1max:.4f}")
    if report.pixel_auroc is not None:
        table.add_row("pixel AUROC", f"{report.pixel_auroc:.4f}")
        table.add_row("AUPRO (FPR<=0.3)", f"{report.aupro:.4f}")
    table.add_row("escape (defective passed)", op.escape.describe())
    table.add_row("overkill (good rejected)", op.overkill.describe())
    table.add_row("accuracy", f"{op.accuracy:.2%}")
    table.add_row("throughput", f"{report.predict_images_per_second:.1f} images/s")
    console.print(table)
    if json_out is not None:
        report.write_json(json_out)
        console.print(f"wrote {json_out}")
    if html_out is not None:
        from cellsight.i18n import localizer, terminal_locale

        write_evaluation_html(report, html_out, localizer(terminal_locale(lang)))
        console.print(f"wrote {html_out}")


@app.command()
@user_errors
def predict(
    model: Annotated[Path, typer.Option(help="Model file, or a folder written by `cellsight export`.")],
    paths: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    out: Annotated[Path, typer.Option(help="Results, one JSON object per line.")],
    heatmaps: Annotated[Path | None, typer.Option(help="Folder for heat-map overlay PNGs.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per inference batch.")] = 16,
) -> None:
    """Inspect images: verdict (OK/NG/ERROR), score (0.5 = threshold) and heat map for each.

    Files that cannot be read are ERROR rows, never OK; the rest go on. Exit code 3 when any file
    could not be inspected, 0 otherwise.
    """
    from cellsight.cli.predict_output import write_predictions
    from cellsight.data.images import list_images
    from cellsight.deploy import load_deployment
    from cellsight.modelfile import load_model

    loaded = load_deployment(model).model if model.is_dir() else load_model(model)
    files: list[Path] = []
    for path in paths:
        files.extend(list_images(path) if path.is_dir() else [path])
    if not files:
        raise _fail("no images found in the given paths")
    with progress_bars() as bars:
        counts = write_predictions(loaded, files, out, heatmaps, batch_size, bars("inspect", len(files)))
    summary = ", ".join(f"{verdict} {count}" for verdict, count in counts.items())
    console.print(f"{len(files)} images: {summary}; wrote {out}")
    if counts.get("ERROR", 0):
        raise typer.Exit(3)


@app.command()
@user_errors
def export(
    model: Annotated[Path, typer.Option(help="Model file written by `cellsight train`.")],
    out: Annotated[Path, typer.Option(help="Deployment folder to write (backbone.onnx, model, deploy.json).")],
    images: Annotated[
        list[Path] | None,
        typer.Option(help="Images or folders to verify ONNX against torch on (default: generated probes)."),
    ] = None,
    max_images: Annotated[int, typer.Option(help="Use at most this many of --images.")] = 32,
    int8: Annotated[
        bool,
        typer.Option("--int8", help="Quantise the backbone to int8, calibrated on --images (the station's good "
                     "images); held to identical verdicts on them. Opt-in: see BENCHMARKS.md for its exactness."),
    ] = False,
) -> None:
    """Write the deployable form: the backbone as ONNX, verified to score like the model, with hashes."""
    from cellsight.data.images import list_images, read_image
    from cellsight.deploy import export_deployment

    arrays = None
    if images:
        files: list[Path] = []
        for path in images:
            files.extend(list_images(path) if path.is_dir() else [path])
        arrays = [read_image(path) for path in files[:max_images]]
        if not arrays:
            raise _fail("no images found in the given --images paths")
    manifest = export_deployment(model, out, arrays, int8=int8)
    check = manifest["verification"]
    tolerance = check["tolerance_diff_over_threshold"]
    console.print(
        f"ONNX ({manifest['runtime']['precision']}) vs torch on {check['images']} {check['source']}: "
        f"max |raw score diff| / threshold {check['max_diff_over_threshold']:.2e}"
        + (f" (tolerance {tolerance:.0e})" if tolerance is not None else "") + ", verdicts identical"
    )
    console.print(f"wrote {out} (onnx sha256 {manifest['onnx']['sha256'][:16]})")


@app.command()
@user_errors
def info(
    model: Annotated[Path, typer.Argument(help="Model file.")],
    all_scores: Annotated[
        bool, typer.Option("--all-scores", help="List every cross-fitted good score instead of their summary.")
    ] = False,
) -> None:
    """Show what a model file holds: detector, version, threshold, training set, versions."""
    from cellsight.modelfile import load_model

    loaded = load_model(model)
    metadata = dict(loaded.metadata)
    training = metadata.get("training")
    if not all_scores and isinstance(training, dict) and isinstance(training.get("cross_fit_good_scores"), list):
        metadata["training"] = {**training, "cross_fit_good_scores": _summary(training["cross_fit_good_scores"])}
    # the JSON is the command's output, on stdout, so `cellsight info model | jq` works (messages go to stderr)
    typer.echo(json.dumps({"content_sha256": loaded.content_hash, **metadata}, indent=2))


def _summary(values: list[float]) -> dict[str, float | int]:
    """Count, min, median and max: one good's score per line made `info` hundreds of lines long."""
    import statistics

    if not values:
        return {"count": 0}
    return {"count": len(values), "min": min(values), "median": statistics.median(values), "max": max(values)}


@app.command()
def version() -> None:
    """Print cellsight's version."""
    typer.echo(__version__)


app.command()(synth)
app.add_typer(line_app, name="line")
app.command()(serve)
app.command()(rescore)
app.add_typer(token_app, name="token")
app.add_typer(dataset_app, name="dataset")
