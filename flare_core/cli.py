"""`flare`: the platform's command line, for work without the Dagster UI.

    flare predict -i IMAGES_DIR -o OUT_DIR (--model RESULTS_FOLDER | --work-root W)
                  [--mode fastest|fast|stock] [--device auto|cpu|cuda] [--threads N]
                  [--backend auto|torch|onnx] [--precision auto|float32|bfloat16] [--whole-image]
                  [--overwrite]

Exit status: 0 when every case was predicted or skipped, 1 when any case
failed, 2 when nothing could start (bad arguments, no model, an untrusted
checkpoint), 130 when interrupted (Ctrl-C; every output already written is
whole, and a rerun skips it). Heavy imports (torch, nnU-Net) wait until the
arguments parsed, so `--help` and argument errors answer at once.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

log = logging.getLogger("flare_core.cli")

MODES = ("fastest", "fast", "stock")  # as efficient_predictor.MODES, which imports torch
BACKENDS = ("auto", "torch", "onnx")
PRECISIONS = ("float32", "bfloat16", "auto")
EXIT_OK, EXIT_CASES_FAILED, EXIT_NOT_STARTED, EXIT_INTERRUPTED = 0, 1, 2, 130
LISTED_FAILURES = 5


def main(argv: Sequence[str] | None = None) -> int:
    """Run `flare` with `argv` (default: the process's arguments); the exit status."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return args.command(args)
    except KeyboardInterrupt:  # outputs are written atomically: whatever exists is whole
        log.error("interrupted")
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flare", description="FLARE23 segmentation platform tools.")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    _add_predict(commands)
    return parser


def _add_predict(commands) -> None:
    predict = commands.add_parser(
        "predict", help="segment a folder of CT scans with the trained student",
        description="Segment every <case>_0000.nii.gz (or .nii) of IMAGES_DIR with the trained student, "
                    "loaded once, into OUT_DIR/<case>.nii.gz: uint8 label maps (0..14) with each input's exact "
                    "size, spacing, origin and direction, written atomically. Existing outputs are skipped "
                    "unless --overwrite. A case that fails (e.g. a corrupt file) is named with the reason and "
                    "the others go on; the exit status is then 1.")
    predict.add_argument("-i", "--input", dest="images_dir", type=Path, required=True, metavar="IMAGES_DIR")
    predict.add_argument("-o", "--output", dest="out_dir", type=Path, required=True, metavar="OUT_DIR")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--work-root", type=Path, metavar="W",
                        help="the platform's work root: predict with its trained student, whose checkpoint is "
                             "verified against the sha256 training recorded before it is loaded")
    source.add_argument("--model", type=Path, metavar="RESULTS_FOLDER",
                        help="a plain nnU-Net v2 results folder (<Trainer>__<Plans>__<cfg> with plans.json, "
                             "dataset.json, fold_all/checkpoint_final.pth). Nothing records its hash, so it is "
                             "loaded as it is: you vouch for where it came from")
    predict.add_argument("--mode", choices=MODES, default="fastest",
                         help="fastest: the body's box, then FLARE22 window skipping; fast: every window; "
                              "stock: nnU-Net's own predictor (default: %(default)s)")
    predict.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: %(default)s)")
    predict.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                         help="CPU threads for torch and onnxruntime (default: every CPU this process may use)")
    predict.add_argument("--backend", choices=BACKENDS, default="auto",
                         help="how fast/fastest run the network: torch, or onnx (onnxruntime on the CPU, from "
                              "an ONNX export made once beside the checkpoint); auto: onnx on the CPU, torch "
                              "on CUDA; stock always runs torch (default: %(default)s)")
    predict.add_argument("--precision", choices=PRECISIONS, default="auto",
                         help="the network's precision on the CPU: float32, bfloat16 autocast (torch backend; "
                              "about 2x faster on CPUs with AVX-512 BF16 / AMX, slower elsewhere; small classes "
                              "can differ from float32), or auto: bfloat16 where the CPU has it natively and "
                              "--backend is not onnx, else float32 (default: %(default)s)")
    predict.add_argument("--whole-image", dest="localise", action="store_false",
                         help="fastest over the whole field of view on FLARE22's 3 x 3 grid, without first "
                              "cropping to the body")
    predict.add_argument("--overwrite", action="store_true", help="predict cases whose output already exists")
    predict.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    predict.add_argument("-v", "--verbose", action="count", default=0, help="-v: progress log, -vv: debug")
    predict.set_defaults(command=_predict)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _configure_logging(verbosity: int) -> None:
    """Warnings and errors on stderr; -v adds this platform's progress log,
    -vv everyone's debug log. Left alone where the host already logs (an
    embedding program, pytest)."""
    root = logging.getLogger()
    if root.handlers:
        return
    logging.basicConfig(level=logging.DEBUG if verbosity > 1 else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbosity == 1:  # not the libraries' INFO chatter (onnxscript's optimiser passes, numexpr)
        logging.getLogger("flare_core").setLevel(logging.INFO)


def _predict(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from flare_core.predict_folder import predict_folder

    if not args.images_dir.is_dir():  # checked before the model loads, which takes seconds
        log.error("input folder %s does not exist", args.images_dir)
        return EXIT_NOT_STARTED
    # stdout carries the summary line alone: nnU-Net prints notes there (e.g.
    # "perform_everything_on_device=True is only supported for cuda devices").
    with contextlib.redirect_stdout(sys.stderr):
        started = time.perf_counter()
        predictor = _set_up(args)
        if predictor is None:
            return EXIT_NOT_STARTED
        load_seconds = time.perf_counter() - started
        with logging_redirect_tqdm():  # log lines above the bar instead of through it
            result = predict_folder(predictor, args.images_dir, args.out_dir, overwrite=args.overwrite,
                                    progress=args.progress)
    print(summary_line(result, load_seconds, predictor), flush=True)
    return EXIT_CASES_FAILED if result.failed else EXIT_OK


def _set_up(args: argparse.Namespace):
    """The loaded predictor and an existing output folder; None (the reason
    logged) when either cannot be had."""
    try:
        predictor = _load_predictor(args)
    except (OSError, ValueError, RuntimeError) as error:  # no model, untrusted checkpoint, no CUDA, ...
        log.error("cannot load the student: %s", error)
        return None
    try:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        log.error("cannot create the output folder %s: %s", args.out_dir, error)
        return None
    return predictor


def _load_predictor(args: argparse.Namespace):
    from flare_core.nnunet.efficient_predictor import StudentPredictor
    from flare_core.nnunet.trained_student import trusted_student_folder

    folder = args.model if args.model is not None else trusted_student_folder(args.work_root).model_folder
    return StudentPredictor.from_results(folder, mode=args.mode, device=args.device, num_threads=args.threads,
                                         backend=args.backend, precision=args.precision,
                                         localise=None if args.localise else False)


def summary_line(result, load_seconds: float, predictor) -> str:
    """e.g. `predicted 3, skipped 1, failed 1 (case_7) | 2.41 s per case | model load 1.3 s | ...`."""
    failed = result.failed
    names = ", ".join(o.case_id for o in failed[:LISTED_FAILURES])
    if len(failed) > LISTED_FAILURES:
        names += f", +{len(failed) - LISTED_FAILURES} more"
    per_case = f"{result.seconds_per_case:.2f} s per case" if result.seconds_per_case is not None else "no case run"
    artifact = getattr(predictor, "onnx_artifact", None)
    export = f" incl. ONNX export {artifact.record['export_seconds']:.1f} s" if artifact and artifact.exported else ""
    return (f"predicted {result.predicted}, skipped {result.skipped}, failed {len(failed)}"
            f"{f' ({names})' if failed else ''} | {per_case} | model load {load_seconds:.1f} s{export} | "
            f"{predictor.mode}{' whole image' if predictor.mode == 'fastest' and not predictor.localise else ''}, "
            f"{predictor.backend} {predictor.precision} on {predictor.device}, "
            f"{predictor.num_threads} thread{'s' if predictor.num_threads != 1 else ''}")


if __name__ == "__main__":
    sys.exit(main())
