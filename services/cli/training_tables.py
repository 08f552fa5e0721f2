"""How ``thinktank train`` and ``thinktank models`` show training runs and model versions."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Column, Table

from services.cli.common import escape, when
from store.tables.training import ModelVersion, TrainingRun


def metrics_summary(kind: str, metrics: dict[str, Any]) -> str:
    """The one or two numbers that say whether training helped."""
    if kind == "sft" and metrics.get("eval_loss") is not None:
        return f"eval loss {metrics['eval_loss']:.4g} (base {metrics.get('eval_loss_base', 0):.4g})"
    if kind == "rl":
        parts = []
        if metrics.get("eval_expected_reward") is not None:
            parts.append(
                f"expected reward {metrics['eval_expected_reward']:.3g} "
                f"(base {metrics.get('eval_expected_reward_base', 0):.3g})"
            )
        if metrics.get("eval_kl") is not None:
            parts.append(f"KL {metrics['eval_kl']:.3g}")
        return ", ".join(parts)
    return ""


def progress_summary(run: TrainingRun) -> str:
    progress = run.progress or {}
    if progress.get("step") is None:
        return ""
    text = f"{progress['step']}/{progress.get('total_steps', '?')}"
    if progress.get("loss") is not None:
        text += f" loss {progress['loss']:.4g}"
    return text


def print_training_runs(console: Console, runs: list[TrainingRun]) -> None:
    if not runs:
        console.print("no training runs yet: try `thinktank train sft --data FILE.jsonl`")
        return
    table = Table(
        Column("id", no_wrap=True),
        "kind",
        Column("model version", no_wrap=True),
        "status",
        "step",
        Column("created", no_wrap=True),
    )
    for run in runs:
        table.add_row(
            run.id,
            run.kind,
            escape(run.model_name),
            run.status,
            progress_summary(run),
            when(run.created_at),
        )
    console.print(table)


def _row_dict(row: Any) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}


def print_training_run(console: Console, run: TrainingRun, *, as_json: bool = False) -> None:
    if as_json:
        console.print_json(json.dumps(_row_dict(run), default=str))
        return
    console.print(f"[bold]training run {run.id}[/bold] ({run.kind}) → {escape(run.model_name)}")
    console.print(f"status: {run.status}" + (f" ({escape(run.error)})" if run.error else ""))
    if run.progress:
        console.print(f"progress: {progress_summary(run)}  {json.dumps(run.progress)}")
    where = f"pid {run.pid} on {run.host}" if run.pid else "no process yet"
    console.print(f"launcher: {run.launcher or '-'}, {where}")
    console.print(
        f"created {when(run.created_at)}, started {when(run.started_at) or '-'}, "
        f"finished {when(run.finished_at) or '-'}"
    )
    console.print("config:", json.dumps(run.config, indent=2), markup=False, highlight=False)


def print_model_versions(console: Console, versions: list[ModelVersion]) -> None:
    if not versions:
        console.print("no model versions yet: `thinktank train sft --data FILE.jsonl` makes one")
        return
    table = Table(
        Column("name", no_wrap=True),
        "role",
        "kind",
        "base",
        "parent",
        Column("dataset", no_wrap=True),
        "metrics",
        Column("created", no_wrap=True),
    )
    for version in versions:
        table.add_row(
            escape(version.name),
            escape(version.role),
            version.kind,
            escape(version.base_model),
            escape(version.parent or ""),
            version.dataset_hash[:12],
            metrics_summary(version.kind, version.metrics),
            when(version.created_at),
        )
    console.print(table)


def print_model_version(console: Console, version: ModelVersion, *, as_json: bool = False) -> None:
    if as_json:
        console.print_json(json.dumps(_row_dict(version), default=str))
        return
    console.print(f"[bold]{escape(version.name)}[/bold] ({version.kind}, role {version.role})")
    console.print(f"base model: {escape(version.base_model)}", highlight=False)
    if version.parent:
        console.print(f"continues: {escape(version.parent)}")
    console.print(f"adapter: {escape(version.adapter_path)}", highlight=False)
    console.print(f"dataset sha256: {version.dataset_hash}")
    console.print(
        f"training run: {version.training_run_id or '-'}, created {when(version.created_at)}"
    )
    summary = metrics_summary(version.kind, version.metrics)
    if summary:
        console.print(summary)
    console.print("metrics:", json.dumps(version.metrics, indent=2), markup=False, highlight=False)


def print_config_options(console: Console, name: str, model: type[BaseModel]) -> None:
    """Every option of a trainer config, as ``thinktank patterns`` shows a pattern's."""
    console.print(f"[bold]{name}[/bold]: {model.__doc__ or ''}")
    for field_name, field in model.model_fields.items():
        if field_name in ("base_adapter", "parent", "dataset_hash"):
            continue  # the launcher fills these in
        if field.is_required():
            default = "required"
        else:
            default = (
                f"default: {json.dumps(field.get_default(call_default_factory=True), default=str)}"
            )
        console.print(
            f"  --{field_name.replace('_', '-'):<18} {escape(field.description or '')} "
            f"[dim]({escape(default)})[/dim]"
        )
