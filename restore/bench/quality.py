"""``restore bench quality``: PSNR/SSIM of SR models on Set5/Set14, video clips, CT and MR denoising, plus speed.

Suites (``--suite``, comma-separated):

* ``set5``, ``set14``: the BI protocol of ``restore.evaluation`` at every ``--scales`` factor on
  ``--data-root``/Set5 and /Set14, next to the published rows of ``PUBLISHED_X4``;
* ``video``: clips of ``--clips DIR`` (HR; LR made by the same protocol) or, without it, synthetic
  pans; PSNR/SSIM-Y and the warping error (flow from the ground truth) per model, frame by frame
  (T = 1) and with the model's temporal context, next to the ground truth's own warping error;
  with ``--lr-degradations`` (e.g. ``noise:10,h264:28``, ``restore.evaluation.degrade_lr``) also
  PSNR/SSIM-Y from LR that is noisy or compressed, as real video is, with the temporal context;
* ``ct``: slices of ``--ct`` DICOM paths with simulated reduced dose (``--dose``, a list, projection
  domain, ``models.ct_dose``), reduced-dose noise of a given level (``--ct-noise-hu``, a list: the
  same texture scaled to that SD over the body) and white Gaussian noise (``--gaussian-hu``, a list); the noisy
  input, ``--ct-models`` (``nlm``, RAT weights...) and BM3D with its sigma tuned against the clean
  slice (an oracle: its best case), in the [-160, 240] HU window, with each method's mean HU error
  per tissue (``restore.evaluation.hu_bias``) and RMS error per tissue (``hu_band_rmse``), its error spectrum's peaks at 2-16 pixel periods
  (``periodic_peak``: ~1 for white noise) and its seconds per slice;
* ``mr``: slices of ``--mr`` DICOM paths (MR series) with Rician noise of ``--rician`` (a list of
  fractions of each slice's 99.5th percentile, ``models.mr_noise``); the noisy input and
  ``--mr-models`` (``nlm``, RAT weights...) on the slice scaled to [0, 1] by that percentile,
  with seconds per slice;
* ``speed``: ``restore bench speed`` (same function) on the SR models and the SRVGG reference.

Models are registry names; ``--weights LABEL=PATH`` gives a weight file (with its model card
beside it) to a registry name or to a new label (its architecture read from the card). Prints
Markdown tables; ``--plot PATH.png`` draws speed against Set5 PSNR.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Published x4 BI results (PSNR dB, SSIM on Y), from /work/shared/data/README.md (the papers' tables)
PUBLISHED_X4: dict[str, dict] = {
    "bicubic (published)": {"params": "-", "set5": (28.42, 0.8104), "set14": (26.00, 0.7027)},
    "SRCNN (2014)": {"params": "57K", "set5": (30.48, 0.8628), "set14": (27.50, 0.7513)},
    "FSRCNN (2016)": {"params": "12K", "set5": (30.72, 0.8660), "set14": (27.61, 0.7550)},
    "VDSR (2016)": {"params": "665K", "set5": (31.35, 0.8838), "set14": (28.01, 0.7674)},
    "EDSR (2017)": {"params": "43M", "set5": (32.46, 0.8968), "set14": (28.80, 0.7876)},
    "SwinIR-light (2021)": {"params": "897K", "set5": (32.44, 0.8976), "set14": (28.77, 0.7858)},
    "SwinIR (2021)": {"params": "11.9M", "set5": (32.92, 0.9044), "set14": (29.09, 0.7950)},
}
SUITES = ("set5", "set14", "video", "ct", "mr", "speed")
# the name of the --ct-bias-phantom slice in the results
PHANTOM_SLICE = "flat-tissue phantom"
# protocol check, always measured on set5/set14: the papers' bicubic, reproduces README's 28.43 / 26.09 dB
IMRESIZE = "bicubic (imresize)"
SPEED_REFERENCE = "srvgg-compact"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="set5,set14,video,speed", help=f"comma-separated: {','.join(SUITES)}")
    parser.add_argument("--models", default="bicubic", help="comma-separated SR models (registry names or --weights labels)")
    parser.add_argument("--weights", action="append", default=[], metavar="LABEL=PATH",
                        help="weight file for a model (repeatable); its model card is read from PATH.json")
    parser.add_argument("--scales", default="4", help="comma-separated SR factors for set5/set14")
    parser.add_argument("--data-root", default="../shared/data/images/bench", help="folder holding Set5/ and Set14/")
    parser.add_argument("--clips", help="folder of HR videos for the video suite (default: synthetic pans)")
    parser.add_argument("--clip-frames", type=int, default=12, help="frames read per clip")
    parser.add_argument("--clip-offset", type=int, default=0, help="frames skipped at the start of each clip")
    parser.add_argument("--clip-height", type=int, help="resize HR clips to this height first (antialiased); synthetic: 96")
    parser.add_argument("--lr-degradations", default="",
                        help="comma-separated degraded-LR conditions for the video suite: noise:SIGMA (8-bit levels), h264:CRF")
    parser.add_argument("--ct", nargs="*", default=[], help="DICOM files/folders/zips with CT series")
    parser.add_argument("--ct-models", default="nlm", help="comma-separated CT denoisers (registry names or labels)")
    parser.add_argument("--ct-slices", type=int, default=1, help="slices per CT (and MR) series (centred)")
    parser.add_argument("--dose", default="0.25", help="comma-separated simulated dose fractions")
    parser.add_argument("--ct-noise-hu", default="",
                        help="comma-separated levels (HU SD over the body) of projection-domain reduced-dose noise to add too")
    parser.add_argument("--gaussian-hu", default="", help="comma-separated white Gaussian noise levels (HU std) to add too")
    parser.add_argument("--ct-bias-phantom", action="store_true",
                        help="add a made-up slice with wide flat fat and soft-tissue discs, whose HU error is bias, not smoothing")
    parser.add_argument("--mr", nargs="*", default=[], help="DICOM files/folders/zips with MR series")
    parser.add_argument("--mr-models", default="nlm", help="comma-separated MR denoisers (registry names or labels)")
    parser.add_argument("--rician", default="0.03,0.05,0.1",
                        help="comma-separated Rician noise levels, fractions of each slice's 99.5th percentile")
    parser.add_argument("--regions", default="auto",
                        help="ct, mr: comma-separated region partitions (those of restore dicom --regions) to run "
                             "every RAT model with; with more than one, each RAT row is labelled 'MODEL [PARTITION]'")
    parser.add_argument("--sam-checkpoint", help="segment-anything checkpoint for --regions sam")
    parser.add_argument("--no-bm3d", action="store_true", help="skip BM3D (slow: ~5 runs per slice)")
    parser.add_argument("--speed-size", default="480x270", help="LR size WxH of the speed suite")
    parser.add_argument("--speed-frames", type=int, default=4)
    parser.add_argument("--self-ensemble", action="store_true",
                        help="set5, set14, video: run every SR model as its 8-transform self-ensemble (the papers' '+' rows; 8x the time)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PATH.png", help="speed (x, log) vs Set5 PSNR (y) scatter")


def run(args: argparse.Namespace) -> dict:
    suites = _split(args.suite)
    unknown = set(suites) - set(SUITES)
    if unknown:
        raise SystemExit(f"unknown suite(s) {', '.join(sorted(unknown))} (known: {', '.join(SUITES)})")
    weights = _parse_weights(args.weights)
    results: dict = {"settings": {"suites": suites, "models": _split(args.models), "weights": weights,
                                  "self_ensemble": args.self_ensemble, "regions": _split(args.regions)}}
    for scale in (int(s) for s in _split(args.scales)):
        for name in ("set5", "set14"):
            if name in suites:
                results.setdefault("images", {})[f"{name}_x{scale}"] = _image_suite(args, name, scale, weights)
    if "video" in suites:
        results["video"] = _video_suite(args, weights)
    if "ct" in suites:
        results["ct"] = _ct_suite(args, weights)
    if "mr" in suites:
        results["mr"] = _mr_suite(args, weights)
    if "speed" in suites:
        results["speed"] = _speed_suite(args, weights)
    print(markdown(results))
    if args.plot:
        plot_speed_quality(results, args.plot)
        results["plot"] = args.plot
    return results


# ------------------------------------------------------------------------------------------ models


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _parse_weights(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"--weights {item!r}: expected LABEL=PATH")
        out[label] = path
    return out


def registry_name(label: str, weights: dict[str, str]) -> str:
    """The registry model that ``label`` loads as: itself if registered, else the first model of
    the architecture named in the model card beside its ``--weights`` file."""
    from restore.errors import ModelError
    from restore.registry import list_models, read_card

    entries = list_models()
    if any(e.name == label for e in entries):
        return label
    if label not in weights:
        raise ModelError(None, f"unknown model {label!r}: not in the registry and no --weights {label}=PATH")
    card_path = Path(weights[label]).with_suffix(".json")
    if not card_path.is_file():
        raise ModelError(card_path, f"model card of --weights {label} not found (needed for an unregistered label)")
    card = read_card(card_path)
    # the weights load with the card's config whichever entry it is; prefer the preset it matches
    candidates = [e for e in entries if e.architecture == card["architecture"]]
    if not candidates:
        raise ModelError(card_path, f"no registry model of architecture {card['architecture']!r}")
    return next((e.name for e in candidates if same_config(e.architecture, e.config, card["config"])), candidates[0].name)


def same_config(architecture: str, a: dict, b: dict) -> bool:
    """Whether two configs build the same network (a card holds every field, a preset only some)."""
    from restore.registry import build_model

    return a == b or build_model(architecture, a).config_dict() == build_model(architecture, b).config_dict()


def _load_sr(label: str, weights: dict[str, str], scale: int, device, self_ensemble: bool = False):
    """-> model (its :class:`~models.ensemble.SelfEnsemble` if asked), or None when its weights are
    fixed at another scale."""
    from models.ensemble import SelfEnsemble
    from restore.errors import ModelError
    from restore.registry import get_entry, load_model

    name = registry_name(label, weights)
    has_scale = "scale" in get_entry(name).config
    try:
        model = load_model(name, weights.get(label), scale=scale if has_scale else None, device=device)
    except ModelError as exc:
        if "but --scale" in exc.cause:
            return None
        raise
    return SelfEnsemble(model) if self_ensemble else model


def _device(args):
    from restore.devices import resolve_device

    return resolve_device(args.device)


# ------------------------------------------------------------------------------------------ suites


def _image_suite(args, name: str, scale: int, weights: dict[str, str]) -> dict:
    import torch

    from restore.errors import InputError
    from restore.evaluation import ImresizeBicubic, evaluate_image
    from restore.io.formats import is_image
    from restore.io.image import read_image

    folder = Path(args.data_root) / {"set5": "Set5", "set14": "Set14"}[name]
    paths = sorted(p for p in folder.glob("*") if is_image(p)) if folder.is_dir() else []
    if not paths:
        raise InputError(folder, "no benchmark images (pass --data-root, the folder holding Set5/ and Set14/)")
    images = []
    for path in paths:
        pixels = read_image(path)
        hr = pixels.permute(2, 0, 1).float() / (65535.0 if pixels.dtype == torch.uint16 else 255.0)
        images.append((path.stem, hr.expand(3, -1, -1) if hr.shape[0] == 1 else hr))
    device = _device(args)
    rows = {}
    for label in [IMRESIZE, *_split(args.models)]:
        model = ImresizeBicubic(scale) if label == IMRESIZE else _load_sr(label, weights, scale, device, args.self_ensemble)
        if model is None:
            rows[label] = {"skipped": f"weights are not x{scale}"}
            continue
        per_image = {stem: evaluate_image(model, hr, scale) for stem, hr in images}
        rows[label] = {
            "psnr": round(sum(r["psnr"] for r in per_image.values()) / len(per_image), 2),
            "ssim": round(sum(r["ssim"] for r in per_image.values()) / len(per_image), 4),
            "per_image": {k: {m: round(v, 4) for m, v in r.items()} for k, r in per_image.items()},
        }
    return {"folder": str(folder), "images": len(images), "scale": scale, "models": rows}


def _read_clips(args) -> dict:
    """name -> HR clip ``(T, 3, H, W)`` float in [0, 1]."""
    import torch
    import torch.nn.functional as F

    from restore.errors import InputError
    from restore.evaluation import quantize, synthetic_clip
    from restore.io.formats import is_video
    from restore.io.video import VideoReader

    if not args.clips:
        height = args.clip_height or 96
        return {f"synthetic{i}": synthetic_clip(args.clip_frames, height, height * 4 // 3, seed=i) for i in range(2)}
    paths = sorted(p for p in Path(args.clips).iterdir() if is_video(p)) if Path(args.clips).is_dir() else []
    if not paths:
        raise InputError(args.clips, "no videos in the --clips folder")
    clips = {}
    for path in paths:
        frames = []
        with VideoReader(path, expect_frames=False) as reader:
            for index, (frame, _) in enumerate(reader):
                if index < args.clip_offset:
                    continue
                peak = 65535.0 if frame.dtype == torch.uint16 else 255.0
                frames.append(frame.permute(2, 0, 1).float() / peak)
                if len(frames) == args.clip_frames:
                    break
        if len(frames) < 2:
            raise InputError(path, "fewer than 2 frames: no temporal consistency to measure")
        clip = torch.stack(frames)
        if args.clip_height:
            width = round(clip.shape[-1] * args.clip_height / clip.shape[-2])
            clip = quantize(F.interpolate(clip, size=(args.clip_height, width), mode="bicubic", antialias=True))
        clips[path.name] = clip
    return clips


def _video_suite(args, weights: dict[str, str]) -> dict:
    from restore.evaluation import evaluate_clip, mod_crop, parse_lr_degradation, warping_error

    scale = 4
    for condition in _split(args.lr_degradations):
        try:
            parse_lr_degradation(condition)
        except ValueError as exc:
            raise SystemExit(f"--lr-degradations: {exc}") from None
    device = _device(args)
    clips = {name: mod_crop(clip, scale) for name, clip in _read_clips(args).items()}
    out = {"scale": scale, "clips": {}}
    models = {label: _load_sr(label, weights, scale, device, args.self_ensemble) for label in _split(args.models)}
    for clip_name, hr in clips.items():
        row = {"frames": hr.shape[0], "size": f"{hr.shape[-1]}x{hr.shape[-2]}",
               "ground_truth_warp_error": _significant(warping_error(hr, hr)), "models": {}}
        for label, model in models.items():
            if model is None:
                continue
            modes = {"T=1": False}
            if int(getattr(model, "temporal_window", 1) or 1) > 1:
                modes[f"T={model.temporal_window}"] = True
            for mode, temporal in modes.items():
                metrics = evaluate_clip(model, hr, scale, temporal=temporal)
                row["models"][f"{label} {mode}"] = {k: _significant(v) for k, v in metrics.items()}
            for condition in _split(args.lr_degradations):
                # every model sees the same noise draw (seeded by the run's --seed)
                metrics = evaluate_clip(model, hr, scale, temporal=True, lr_degradation=condition, seed=args.seed)
                row.setdefault("degraded_lr", {}).setdefault(condition, {})[label] = {
                    "psnr": round(metrics["psnr"], 2), "ssim": round(metrics["ssim"], 4)}
        out["clips"][clip_name] = row
    return out


def _significant(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def _series_slices(paths: list[str], per_series: int, modality: str) -> list[tuple[str, object, float]]:
    """-> [(name, slice (H, W) float32, pixel size mm)]: ``per_series`` centred slices of every
    single-channel series under ``paths`` of ``modality`` ("CT": in HU; "MR": in stored units)."""
    from restore.errors import InputError
    from restore.io.dicom import discover, read_series_volume

    found = discover(paths)
    slices = []
    for series in found.series:
        if series.modality != modality or (modality == "CT" and series.units != "HU"):
            continue
        volume, info = read_series_volume(series)
        if volume.ndim != 3:  # colour
            continue
        centre = volume.shape[0] // 2
        start = max(0, centre - per_series // 2)
        for z in range(start, min(volume.shape[0], start + per_series)):
            spacing = info.pixel_spacing[1] if info.pixel_spacing else 0.7
            slices.append((f"{Path(str(series.first.ref)).name}[{z}]", volume[z], float(spacing)))
    if not slices:
        reasons = "; ".join(f"{s.ref}: {s.reason}" for s in found.skipped[:3]) if found.skipped else "no image series"
        raise InputError(",".join(paths), f"no single-channel {modality} series ({reasons})")
    return slices


def _denoisers(task: str, args: argparse.Namespace, labels: str, weights: dict[str, str]) -> dict:
    """``{row label: SliceProcessor}``: each model of ``labels``, a RAT model once per partition of
    ``args.regions`` (labelled ``"MODEL [PARTITION]"`` when there are several)."""
    from restore.dicom.processing import REGION_METHODS, ModelChoice, ProcessingConfig, build_processor
    from restore.registry import get_entry

    regions = _split(args.regions)
    unknown = set(regions) - set(REGION_METHODS)
    if unknown or not regions:
        raise SystemExit(f"--regions: unknown partition(s) {', '.join(sorted(unknown))} (known: {', '.join(REGION_METHODS)})")
    processors = {}
    for label in _split(labels):
        name = registry_name(label, weights)
        methods = regions if get_entry(name).architecture == "rat" else regions[:1]
        for method in methods:
            row = f"{label} [{method}]" if len(methods) > 1 else label
            config = ProcessingConfig(regions=method, sam_checkpoint=args.sam_checkpoint)
            processors[row] = build_processor(task, ModelChoice(name, False, label), weights=weights.get(label),
                                              config=config, device=_device(args))
    return processors


def _ct_suite(args, weights: dict[str, str]) -> dict:
    """``{"window_hu", "conditions": {label: {"dose" | "gaussian_hu", "slices": {...}}}}``, and the
    first condition's ``dose`` and ``slices`` at the top level (the layout of a single dose)."""
    import time

    import numpy as np

    from models.ct_dose import simulate_ct_noise, simulate_low_dose_ct
    from restore.evaluation import (CT_WINDOW_HU, bm3d_denoise, ct_metrics, flat_tissue_phantom, hu_band_rmse, hu_bias,
                                    periodic_peak, sweep, tune_on_clean)

    if not args.ct and not args.ct_bias_phantom:
        raise SystemExit("the ct suite needs --ct PATH [PATH ...] (DICOM files or folders) or --ct-bias-phantom")
    processors = _denoisers("ct-denoise", args, args.ct_models, weights)
    conditions = [(f"dose {d}", {"dose": float(d)}) for d in _split(str(args.dose))]
    conditions += [(f"ct noise {n} HU", {"ct_noise_hu": float(n)}) for n in _split(str(args.ct_noise_hu))]
    conditions += [(f"gaussian {g} HU", {"gaussian_hu": float(g)}) for g in _split(str(args.gaussian_hu))]
    rng = np.random.default_rng(args.seed)
    slices = _series_slices(args.ct, args.ct_slices, "CT") if args.ct else []
    # the phantom's bands are wide: its interior, 6 px from any edge, shows offsets that blur cannot
    erosion = {PHANTOM_SLICE: 6}
    if args.ct_bias_phantom:
        slices.append((PHANTOM_SLICE, flat_tissue_phantom(), 0.5))

    def measure(out_hu: np.ndarray, clean: np.ndarray, seconds: float | None = None, slice_name: str = "") -> dict:
        m = ct_metrics(out_hu, clean)
        m["psnr"], m["ssim"] = round(m["psnr"], 2), round(m["ssim"], 4)
        m["bias_hu"] = {k: round(v, 2) for k, v in hu_bias(out_hu, clean, erosion=erosion.get(slice_name, 2)).items()}
        m["rmse_hu"] = {k: round(v, 2) for k, v in hu_band_rmse(out_hu, clean).items()}
        m["periodic_peak"] = {k: round(v, 2) for k, v in periodic_peak(out_hu, clean).items()}
        if seconds is not None:
            m["seconds"] = round(seconds, 3)
        return m

    out: dict = {"window_hu": list(CT_WINDOW_HU), "conditions": {}}
    for label, condition in conditions:
        rows = {}
        for name, clean, pixel_mm in slices:
            if "dose" in condition:
                noisy = simulate_low_dose_ct(clean, condition["dose"], rng, pixel_size_mm=pixel_mm)
            elif "ct_noise_hu" in condition:
                noisy = simulate_ct_noise(clean, condition["ct_noise_hu"], rng, pixel_size_mm=pixel_mm)
            else:
                noisy = (clean + rng.normal(0.0, condition["gaussian_hu"], clean.shape)).astype(np.float32)
            noise_std = float(np.std(noisy - clean))
            row = {"noise_std_hu": round(noise_std, 2), "methods": {"noisy input": measure(noisy, clean, slice_name=name)}}
            for method, processor in processors.items():
                start = time.perf_counter()
                restored = processor(noisy[None], "HU", "CT")[0]
                row["methods"][method] = measure(restored, clean, time.perf_counter() - start, slice_name=name)
            if not args.no_bm3d:
                try:
                    best = tune_on_clean(bm3d_denoise, noisy, clean, sweep(noise_std))
                except ImportError:
                    row["methods"]["bm3d"] = {"skipped": "pip install bm3d (restore[bench])"}
                else:
                    tried = [p for p, _ in best.tried]
                    row["methods"]["bm3d (oracle sigma)"] = {
                        **measure(best.output, clean, slice_name=name), "sigma_hu": round(best.param, 2),
                        "at_grid_edge": best.param in (min(tried), max(tried)),
                        "tried": [[round(p, 2), round(v, 2)] for p, v in best.tried],
                    }
            rows[name] = row
        out["conditions"][label] = {**condition, "slices": rows}
    first = next(iter(out["conditions"].values()))
    if "dose" in first:
        out["dose"], out["slices"] = first["dose"], first["slices"]
    return out


def _mr_suite(args, weights: dict[str, str]) -> dict:
    """``{"conditions": {"rician 0.05": {"rician": 0.05, "slices": {name: {"methods": {label: metrics}}}}}}``."""
    import time

    import numpy as np

    from models.mr_noise import add_relative_rician_noise
    from restore.evaluation import mr_metrics

    if not args.mr:
        raise SystemExit("the mr suite needs --mr PATH [PATH ...] (DICOM files or folders)")
    processors = _denoisers("mr-denoise", args, args.mr_models, weights)
    rng = np.random.default_rng(args.seed)
    slices = _series_slices(args.mr, args.ct_slices, "MR")

    def measure(out: np.ndarray, clean: np.ndarray, seconds: float | None = None) -> dict:
        m = {k: round(v, 2 if k == "psnr" else 4) for k, v in mr_metrics(out, clean).items()}
        return m if seconds is None else {**m, "seconds": round(seconds, 3)}

    conditions = {}
    for level in (float(v) for v in _split(str(args.rician))):
        rows = {}
        for name, clean, _ in slices:
            noisy = add_relative_rician_noise(clean, level, rng)
            row = {"noisy input": measure(noisy, clean)}
            for label, processor in processors.items():
                start = time.perf_counter()
                restored = processor(noisy[None], "stored", "MR")[0]
                row[label] = measure(restored, clean, time.perf_counter() - start)
            rows[name] = {"methods": row}
        conditions[f"rician {level:g}"] = {"rician": level, "slices": rows}
    return {"conditions": conditions}


def _speed_suite(args, weights: dict[str, str]) -> dict:
    from restore.bench import speed

    parser = argparse.ArgumentParser()
    speed.add_arguments(parser)
    from restore.registry import get_entry, read_card

    timed_as, skipped = {}, {}
    for label in _split(args.models):
        name = registry_name(label, weights)
        card = Path(weights[label]).with_suffix(".json") if label in weights else None
        entry = get_entry(name)
        if card is not None and card.is_file() and not same_config(entry.architecture, entry.config, read_card(card)["config"]):
            skipped[label] = {"skipped": f"card config matches no registry preset (closest: {name})"}
        else:
            timed_as[label] = name
    names = list(dict.fromkeys([*timed_as.values(), SPEED_REFERENCE]))
    speed_args = parser.parse_args(["--models", ",".join(names), "--size", args.speed_size, "--frames",
                                    str(args.speed_frames), "--device", args.device, "--precision", "fp32"])
    measured = speed.run(speed_args)
    # weights do not change speed: a label is timed as its registry architecture
    rows = {label: {**measured["models"][name], "timed_as": name} for label, name in timed_as.items()} | skipped
    rows.setdefault(SPEED_REFERENCE, {**measured["models"][SPEED_REFERENCE], "timed_as": SPEED_REFERENCE})
    return {"settings": measured["settings"], "models": rows}


# ------------------------------------------------------------------------------------------ output


def markdown(results: dict) -> str:
    """Markdown tables of the results of :func:`run`."""
    lines: list[str] = []
    for key, suite in results.get("images", {}).items():
        lines += [f"\n### {key} (PSNR dB / SSIM on Y, {suite['images']} images)", "", "| model | PSNR | SSIM |", "|---|---|---|"]
        for label, row in suite["models"].items():
            lines.append(f"| {label} | {row.get('psnr', '-')} | {row.get('ssim', row.get('skipped', '-'))} |")
        name, scale = key.split("_x")
        if scale == "4":
            for label, pub in PUBLISHED_X4.items():
                p, s = pub[name]
                lines.append(f"| {label} ({pub['params']}) | {p:.2f} | {s:.4f} |")
    if "video" in results:
        lines += ["\n### video x4 (PSNR dB / SSIM on Y, warping error x1e3; flow from the ground truth)", "",
                  "| clip | model | PSNR | SSIM | warp err |", "|---|---|---|---|---|"]
        for clip, row in results["video"]["clips"].items():
            lines.append(f"| {clip} | ground truth | - | - | {1e3 * row['ground_truth_warp_error']:.4g} |")
            for label, m in row["models"].items():
                lines.append(f"| {clip} | {label} | {m['psnr']:.2f} | {m['ssim']:.4f} | {1e3 * m['warp_error']:.4g} |")
        degraded = [(clip, condition, models) for clip, row in results["video"]["clips"].items()
                    for condition, models in row.get("degraded_lr", {}).items()]
        if degraded:
            labels = list(degraded[0][2])
            lines += ["\n### video x4 from degraded LR (PSNR dB / SSIM on Y, temporal context)", "",
                      f"| clip | LR | {' | '.join(labels)} |", "|---|---|" + "---|" * len(labels)]
            for clip, condition, models in degraded:
                cells = " | ".join(f"{models[m]['psnr']:.2f} / {models[m]['ssim']:.4f}" for m in labels)
                lines.append(f"| {clip} | {condition} | {cells} |")
    if "ct" in results:
        ct = results["ct"]
        conditions = ct.get("conditions") or {f"dose {ct['dose']}": {"slices": ct["slices"]}}
        lines += [f"\n### CT (PSNR dB / SSIM in {ct['window_hu']} HU; mean HU error in fat / soft tissue;"
                  " largest error-spectrum peak at 2-16 px periods, ~1 = none; s/slice)", "",
                  "| noise | slice | method | PSNR | SSIM | fat HU | soft HU | peak | s |", "|---|---|---|---|---|---|---|---|---|"]
        for cond, c in conditions.items():
            for name, row in c["slices"].items():
                for label, m in row["methods"].items():
                    bias = m.get("bias_hu", {})
                    peak = max(m["periodic_peak"].values()) if m.get("periodic_peak") else "-"
                    lines.append(f"| {cond} | {name} | {label} | {m.get('psnr', '-')} | {m.get('ssim', m.get('skipped', '-'))} "
                                 f"| {bias.get('fat', '-')} | {bias.get('soft tissue', '-')} | {peak} | {m.get('seconds', '-')} |")
    if "mr" in results:
        lines += ["\n### MR (PSNR dB / SSIM on the slice scaled to [0, 1] by its 99.5th percentile; s/slice)", "",
                  "| noise | slice | method | PSNR | SSIM | s |", "|---|---|---|---|---|---|"]
        for cond, c in results["mr"]["conditions"].items():
            for name, row in c["slices"].items():
                for label, m in row["methods"].items():
                    lines.append(f"| {cond} | {name} | {label} | {m['psnr']} | {m['ssim']} | {m.get('seconds', '-')} |")
    if "speed" in results:
        s = results["speed"]["settings"]
        lines += [f"\n### speed ({s['device']}, LR {s['lr_size']}, {s['frames']} frames per call)", "",
                  "| model | frames/s | params (M) | GMAC/frame | timed as |", "|---|---|---|---|---|"]
        for label, row in results["speed"]["models"].items():
            if "skipped" in row:
                lines.append(f"| {label} | {row['skipped']} | | | |")
                continue
            lines.append(f"| {label} | {row['frames_per_s']} | {row['params_m']} | {row['gmac_per_frame']} | {row['timed_as']} |")
    return "\n".join(lines).lstrip("\n")


def plot_speed_quality(results: dict, path: str | Path) -> None:
    """Scatter of frames/s (x, log) against Set5 x4 PSNR (y): our models as points, models with a
    speed but no Set5 score as vertical lines, published rows (no speed) as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    set5 = results.get("images", {}).get("set5_x4", {}).get("models", {})
    speed = results.get("speed", {}).get("models", {})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.set_xscale("log")
    for label, row in speed.items():
        if "skipped" in row:
            continue
        fps = row["frames_per_s"]
        if "psnr" in set5.get(label, {}):
            ax.scatter([fps], [set5[label]["psnr"]], zorder=3)
            ax.annotate(label, (fps, set5[label]["psnr"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        else:
            ax.axvline(fps, color="grey", ls="--", lw=0.8)
            ax.annotate(f"{label} (speed only)", (fps, 0.02), xycoords=("data", "axes fraction"), rotation=90, fontsize=7)
    for i, (label, pub) in enumerate(PUBLISHED_X4.items()):
        ax.axhline(pub["set5"][0], color="tab:blue", ls=":", lw=0.7)
        # alternate sides: EDSR and SwinIR-light are 0.02 dB apart
        side = (0.99, "right") if i % 2 else (0.01, "left")
        ax.annotate(label, (side[0], pub["set5"][0]), xycoords=("axes fraction", "data"), ha=side[1], va="bottom", fontsize=7)
    if speed:
        settings = results["speed"]["settings"]
        ax.set_xlabel(f"frames/s ({settings['device']}, LR {settings['lr_size']} -> x{settings['scale']}, log)")
    else:
        ax.set_xlabel("frames/s (not measured: add the speed suite)")
    ax.set_ylabel("Set5 x4 PSNR-Y (dB)")
    ax.set_title("restore bench quality: speed vs quality")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
