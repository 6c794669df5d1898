"""Prometheus against a local grid, without Docker: file-based targets and a generated config.

A ``LocalGrid`` given a ``targets_dir`` writes one file_sd file per job there (gateway,
dispatcher, substation), and empties them when it stops. ``write_config`` writes a Prometheus
config beside them with the same jobs, labels and alert rules as the compose stack
(deploy/prometheus), so the same dashboard queries work on both. Prometheus re-reads the target
files when they change: start it once, then start and stop grids under it.

    make prometheus     # terminal 1: Prometheus on http://127.0.0.1:9090
    make demo           # terminal 2
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

JOBS = ("gateway", "dispatcher", "substation")
REPO_RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules.yml"
RABBITMQ_PROMETHEUS = "127.0.0.1:15692"


class PrometheusNotFound(Exception):
    pass


def write_targets(
    directory: Path, namespace: str, targets: Mapping[str, Sequence[tuple[str, str]]]
) -> None:
    """``targets[job]`` = [(host:port, name), ...]; jobs missing from it get an empty file."""
    directory.mkdir(parents=True, exist_ok=True)
    for job in JOBS:
        groups = [
            {"targets": [address], "labels": {"namespace": namespace, "process": name}}
            for address, name in targets.get(job, ())
        ]
        path = directory / f"{job}.json"
        # Prometheus may read at any moment: never let it see a half-written file.
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(groups, indent=2))
        os.replace(tmp, path)


def config(
    targets_dir: Path,
    *,
    rules: Path | None = REPO_RULES,
    rabbitmq: str = RABBITMQ_PROMETHEUS,
    scrape_interval: str = "5s",
) -> dict[str, Any]:
    """The config as data (JSON is YAML, so it is written as JSON)."""
    scrape: list[dict[str, Any]] = [
        {
            "job_name": job,
            "file_sd_configs": [
                {"files": [str(targets_dir.resolve() / f"{job}.json")], "refresh_interval": "5s"}
            ],
        }
        for job in JOBS
    ]
    scrape += [
        {"job_name": "rabbitmq", "static_configs": [{"targets": [rabbitmq]}]},
        {
            "job_name": "rabbitmq-queues",
            "metrics_path": "/metrics/detailed",
            "params": {"family": ["queue_coarse_metrics", "queue_consumer_count"]},
            "static_configs": [{"targets": [rabbitmq]}],
        },
    ]
    doc: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": scrape,
    }
    if rules is not None:
        doc["rule_files"] = [str(rules.resolve())]
    return doc


def write_config(targets_dir: Path, **kwargs: Any) -> Path:
    path = targets_dir / "prometheus.yml"
    targets_dir.mkdir(parents=True, exist_ok=True)
    for job in JOBS:  # so that Prometheus starts cleanly before any grid has run
        if not (targets_dir / f"{job}.json").exists():
            (targets_dir / f"{job}.json").write_text("[]")
    path.write_text(json.dumps(config(targets_dir, **kwargs), indent=2))
    return path


def find_prometheus(binary: str = "prometheus") -> str:
    found = shutil.which(binary) or shutil.which(binary, path="/usr/bin:/usr/local/bin")
    if found is None:
        raise PrometheusNotFound(
            f"no `{binary}` on PATH: install Debian's package (apt-get install prometheus) or "
            "a release from prometheus.io"
        )
    return found


def command(
    config_path: Path, *, listen: str = "127.0.0.1:9090", binary: str = "prometheus"
) -> list[str]:
    data = config_path.parent / "data"
    return [
        find_prometheus(binary),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address={listen}",
        "--storage.tsdb.retention.time=1d",
    ]


def start(
    config_path: Path,
    *,
    listen: str = "127.0.0.1:9090",
    log_path: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start Prometheus in the background (tests); ``make prometheus`` runs it in the foreground."""
    log = open(log_path or config_path.parent / "prometheus.log", "wb")  # noqa: SIM115
    try:
        return subprocess.Popen(
            command(config_path, listen=listen),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    finally:
        log.close()  # the child holds its own copy
