"""``smartbkg-prod train`` and ``smartbkg-prod evaluate``: thin click layers over
:mod:`smartbkg_prod.filter` (the main group adds them and turns library errors into one
line)."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

import click

from smartbkg_prod.errors import SpecError


def _training_events(
    campaign,
    spec: str,
    outputs: str | None,
    in_process: bool,
    workers: int,
    db_url: str | None,
    resimulations: int = 0,
):
    """Labelled events of the filter-off campaign ``spec``: reused, run, or made in-process;
    ``resimulations`` > 0 adds the soft label (the pass fraction over more detector seeds)."""
    from smartbkg_prod.filter.data import ChainSettings, read_campaign_outputs, simulate_ranges
    from smartbkg_prod.plan import campaign_output_dir, plan_jobs

    if outputs:
        return read_campaign_outputs(
            outputs, resimulations, campaign.simulation, campaign.skim, campaign.seed
        )
    if in_process:
        chain = ChainSettings(campaign.process, campaign.simulation, campaign.skim, resimulations)
        return simulate_ranges(chain, plan_jobs(campaign), workers)
    from smartbkg_prod.submit import submit_campaign

    status = submit_campaign(campaign, spec_path=spec, db_url=db_url, progress=True)
    if not status.complete:
        raise click.ClickException(
            f"training campaign {campaign.campaign_id} is not complete ({status.jobs_by_state}); "
            "resubmit it, then run train again (finished jobs are reused)"
        )
    return read_campaign_outputs(
        campaign_output_dir(campaign),
        resimulations,
        campaign.simulation,
        campaign.skim,
        campaign.seed,
    )


@click.command("train")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--out",
    "-o",
    "out",
    default="model.pt",
    show_default=True,
    help="Model file to write (.pt; a .json sidecar is written beside it).",
)
@click.option(
    "--outputs",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="Reuse the ROOT outputs of an already-run filter-off campaign in this folder.",
)
@click.option(
    "--in-process",
    is_flag=True,
    help="Generate, simulate and skim the campaign's events here instead of submitting it.",
)
@click.option(
    "--workers", default=1, show_default=True, help="Processes for --in-process event production."
)
@click.option(
    "--cache",
    default=None,
    type=click.Path(dir_okay=False),
    help="Labelled-events .npz: read if present, else written after the campaign.",
)
@click.option(
    "--hidden",
    default=64,
    show_default=True,
    help="Width of the dense and GCN layers (reference 128).",
)
@click.option(
    "--embedding-dim",
    default=8,
    show_default=True,
    help="PDG embedding size (8-16; free at inference: its first-layer share is one table).",
)
@click.option(
    "--max-minutes", default=15.0, show_default=True, help="Wall-time cap of the training loop."
)
@click.option("--max-epochs", default=200, show_default=True)
@click.option("--learning-rate", default=2e-3, show_default=True, help="Adam learning rate.")
@click.option(
    "--patience", default=10, show_default=True, help="Epochs without validation gain to stop."
)
@click.option("--threads", default=2, show_default=True, help="CPU threads for training.")
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where to train.",
)
@click.option(
    "--disco-lambda",
    default=0.0,
    show_default=True,
    help="Weight of the DisCo dCorr² term (0 = off).",
)
@click.option("--disco-variable", default="n_mc_particles", show_default=True)
@click.option(
    "--speedup-lambda", default=0.0, show_default=True, help="Weight of the 1/S_eff term (0 = off)."
)
@click.option(
    "--resimulations",
    default=0,
    show_default=True,
    help="Re-simulate each training event this many more times (detector + skim, ~0.1 ms "
    "each) and train on its pass fraction q̂ instead of one skim decision (8-16 suggested).",
)
@click.option(
    "--init-model",
    default=None,
    help="Fine-tune: start from this model (.pt or 'default'), its shape and encoding.",
)
@click.option(
    "--skim-features",
    is_flag=True,
    help="The hybrid filter: join the campaign's skim run on the ideal-detector view of each "
    "event (~0.1-0.2 ms/event, counted in t_NN) to the graph before the head.",
)
@click.option("--seed", default=1, show_default=True, help="Split and initialisation seed.")
@click.option(
    "--db", "db_url", default=None, envvar="SMARTBKG_DB", help="Database URL for the campaign."
)
@click.option("--json", "as_json", is_flag=True, help="Print the training metrics as JSON.")
def train(
    spec,
    out,
    outputs,
    in_process,
    workers,
    cache,
    hidden,
    embedding_dim,
    max_minutes,
    max_epochs,
    learning_rate,
    patience,
    threads,
    device,
    disco_lambda,
    disco_variable,
    speedup_lambda,
    resimulations,
    init_model,
    skim_features,
    seed,
    db_url,
    as_json,
) -> None:
    """Train the NN filter on the filter-off campaign SPEC (label: the skim decision, or its
    pass fraction over re-simulations with --resimulations)."""
    from smartbkg_prod.filter.data import LabelledEvents
    from smartbkg_prod.filter.train import TrainOptions, save_trained, train_filter
    from smartbkg_prod.spec import load_campaign

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    campaign = load_campaign(spec)
    if campaign.filter.mode != "off":
        raise SpecError(
            spec, [f"filter.mode: '{campaign.filter.mode}' — training data needs filter.mode: off"]
        )
    if cache and Path(cache).exists():
        events = LabelledEvents.load(cache)
        if events.resimulations != resimulations:
            raise click.ClickException(
                f"--cache {cache} holds events re-simulated {events.resimulations} times, "
                f"not {resimulations}: pass --resimulations {events.resimulations} or another --cache"
            )
    else:
        events = _training_events(
            campaign, spec, outputs, in_process, workers, db_url, resimulations
        )
        if cache:
            events.save(cache)
    click.echo(f"training on {events.n_events} events, retention {events.retention:.4f}", err=True)
    options = TrainOptions(
        hidden=hidden,
        embedding_dim=embedding_dim,
        max_minutes=max_minutes,
        max_epochs=max_epochs,
        learning_rate=learning_rate,
        patience=patience,
        threads=threads,
        device=device,
        disco_lambda=disco_lambda,
        disco_variable=disco_variable,
        speedup_lambda=speedup_lambda,
        init_model=init_model,
        seed=seed,
    )
    features = builder = None
    if skim_features:
        from smartbkg_prod.filter.skim_features import IdealSkim

        builder = IdealSkim.builtin(campaign.simulation, campaign.skim).raw
        features = builder(events.particles)
    result = train_filter(events, options, features, builder)
    # The command line as typed from SPEC on (also when run as `python -c` or `-m`).
    arguments = sys.argv[sys.argv.index(spec) :] if spec in sys.argv else [spec]
    command = "smartbkg-prod train " + shlex.join(arguments)
    sha256 = save_trained(result, out, events, options, command)
    summary = {"model": str(out), "sha256": sha256, **result.metrics}
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=float))
    else:
        click.echo(
            f"{out}: validation AUC {result.metrics['validation_auc']:.4f}, "
            f"sample speedup {result.metrics['sample_speedup_reference']:.2f} of max "
            f"{result.metrics['max_speedup_reference']:.2f} at reference costs; sha256 {sha256}"
        )


@click.command("export-onnx")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
def export_onnx(model) -> None:
    """Add the ONNX export the worker runs (MODEL.onnx, recorded in MODEL.json) to a .pt
    model trained before the worker ran ONNX Runtime (`train` writes it itself)."""
    from smartbkg_prod.filter.checkpoint import export_artifact

    sha256 = export_artifact(model)
    click.echo(f"{Path(model).with_suffix('.onnx')}: sha256 {sha256}")


@click.command("evaluate")
@click.option(
    "--model",
    "-m",
    "model",
    default="default",
    show_default=True,
    help="Model file (.pt) or 'default' (shipped).",
)
@click.option(
    "--events",
    "n_events",
    default=100_000,
    show_default=True,
    help="Fresh held-out events to generate.",
)
@click.option(
    "--events-file",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Evaluate on a labelled-events .npz instead.",
)
@click.option("--process", default="bbbar_generic", show_default=True)
@click.option(
    "--seed",
    default=424242,
    show_default=True,
    help="Generator seed (keep it away from training seeds).",
)
@click.option("--threshold", default=None, type=float, help="Cut threshold (default: the model's).")
@click.option(
    "--p-min",
    default=None,
    type=float,
    help="Sample-mode p_min (default: the model's recommendation).",
)
@click.option(
    "--oracle",
    default=0,
    show_default=True,
    help="Also re-simulate the events this many times for the best speedup any generator-level filter could reach.",
)
@click.option(
    "--seed-scan",
    default=0,
    show_default=True,
    help="Repeat the sample-mode decision with this many seeds (pull of Σ weights, KL spread).",
)
@click.option(
    "--reference-events",
    default=None,
    type=int,
    help="Independent unfiltered events for the bias tests (default: as many as evaluated).",
)
@click.option(
    "--reference-seed",
    default=None,
    type=int,
    help="Generator seed of the reference sample (default: --seed + 1; chunk seeds derive from it).",
)
@click.option(
    "--bias-toys",
    default=None,
    type=int,
    help="No-bias toys that calibrate the χ² p-values (default 2000; 0: asymptotic "
    "p-values only, no verdict).",
)
@click.option(
    "--save-events",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the evaluation events (.npz) for later --events-file runs.",
)
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder for evaluation.json and PNG plots.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def evaluate(
    model,
    n_events,
    events_file,
    process,
    seed,
    threshold,
    p_min,
    oracle,
    seed_scan,
    reference_events,
    reference_seed,
    bias_toys,
    save_events,
    out_dir,
    as_json,
) -> None:
    """Evaluate a filter model: AUC, speedups (measured and reference costs), bias."""
    from smartbkg_prod.filter.data import LabelledEvents, simulate_chunks, simulate_labelled
    from smartbkg_prod.filter.evaluate import evaluate_model, write_plots
    from smartbkg_prod.physics.config import SimulationConfig, SkimConfig

    if events_file:
        events = LabelledEvents.load(events_file)
    else:
        events = simulate_labelled(process, n_events, seed, SimulationConfig(), SkimConfig())
    if save_events:
        events.save(save_events)
    reference = simulate_chunks(
        process,
        events.n_events if reference_events is None else reference_events,
        seed + 1 if reference_seed is None else reference_seed,
        SimulationConfig(),
        SkimConfig(),
    )
    report, scores = evaluate_model(
        model,
        events,
        threshold=threshold,
        p_min=p_min,
        seed=seed,
        oracle_resimulations=oracle,
        scan_seeds=seed_scan,
        reference=reference,
        **({} if bias_toys is None else {"bias_toys": bias_toys}),
    )
    if out_dir:
        report.plots = write_plots(report, events, scores, out_dir)
        Path(out_dir, "evaluation.json").write_text(report.model_dump_json(indent=2))
    if as_json:
        click.echo(report.model_dump_json(indent=2))
        return
    reference = report.reference
    click.echo(
        f"{report.model}: {report.n_events} events, retention {report.retention:.4f}, AUC {report.auc:.4f}\n"
        f"cut {report.threshold:.3f}: TPR {report.tpr_at_threshold:.3f} FPR {report.fpr_at_threshold:.4f}\n"
        f"filter {report.filter_ms_cpu_1core:.4f} ms/event on 1 CPU core\n"
        f"reference costs: S_max {reference.max_speedup:.2f}, cut {reference.cut_speedup:.2f}, "
        f"sample {reference.sample_speedup:.2f} ({reference.sample_fraction_of_max:.2f} of S_max)\n"
        f"measured costs:  S_max {report.measured.max_speedup:.2f}, cut {report.measured.cut_speedup:.2f}, "
        f"sample {report.measured.sample_speedup:.2f} "
        f"(t_g {report.measured.costs_ms['generation_ms']:.3f} ms, "
        f"t_s {report.measured.costs_ms['simulation_ms']:.3f} ms)\n"
        f"  {report.measured_costs_note}\n"
        f"bias (sample, p_min {report.p_min}) against {report.reference_events} independent "
        f"unfiltered events: max KL {report.max_kl_sample or 0:.2e} "
        f"(its sampling noise {report.max_kl_sample_noise or 0:.2e}), min χ² p-value "
        f"{report.min_p_value_sample or 1:.3g} ({report.bias_toys} toys; asymptotic "
        f"{report.min_p_value_sample_asymptotic or 1:.3g})"
    )
    if report.seed_scan:
        scan = report.seed_scan
        ok = {True: "ok", False: "WRONG", None: "too few seeds to say"}[scan.weight_arithmetic_ok]
        click.echo(
            f"weight arithmetic check (not a bias test), {scan.seeds} sampling seeds on the same "
            f"events: Σw pull {scan.sum_weights_pull_mean:+.3f} ± {scan.sum_weights_pull_error:.3f} "
            f"(std {scan.sum_weights_pull_std:.2f}): {ok}"
        )
    verdict = report.bias_verdict
    if verdict is not None:
        summary = {True: "unbiased", False: "BIASED", None: "not judged"}[verdict.unbiased]
        checks = "; ".join(
            f"{check.name} {check.status}" + (f" ({check.reason})" if check.reason else "")
            for check in verdict.checks
        )
        click.echo(f"bias verdict: {summary} ({checks})")
    if report.oracle:
        click.echo(
            f"oracle ({report.oracle.resimulations} re-simulations): AUC {report.oracle.auc:.4f}, "
            f"sample {report.oracle.sample_speedup_reference:.2f} "
            f"({report.oracle.sample_fraction_of_max:.2f} of S_max; no generator-level filter "
            f"above {report.oracle.sample_fraction_of_max_upper_bound:.2f}), "
            f"cut {report.oracle.cut_speedup_reference:.2f}"
        )
