"""register: log the bundle as a new model version, rescore the champion on this test split, gate
the alias."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from raypipe.errors import RegistryError
from raypipe.pipeline.stages import _datasets
from raypipe.pipeline.stages._io import read_json, write_json
from raypipe.registry.publish import Published, register_version
from raypipe.registry.store import client

if TYPE_CHECKING:
    from raypipe.pipeline.context import RunContext
    from raypipe.pipeline.stages.evaluate import Evaluated
    from raypipe.pipeline.stages.preprocess import Prepared
    from raypipe.pipeline.stages.profile import Profiled
    from raypipe.pipeline.stages.train import Trained


@dataclass
class Registered(Published):
    """A published version, as the stage cache stores it."""

    REQUIRED = ("register.json",)

    def save(self, d: Path) -> None:
        write_json(d / "register.json", asdict(self))

    @classmethod
    def load(cls, d: Path) -> Registered:
        """Raises when the model version is gone from the store: the entry is then a cache miss."""
        reg = cls(**read_json(d / "register.json"))
        if not reg.tracking_uri:
            raise ValueError("entry written before the store was recorded in it")
        client(reg.tracking_uri).get_model_version(reg.model_name, reg.model_version)
        return reg


def register(
    ctx: RunContext, profile: Profiled, preprocess: Prepared, train: Trained, evaluate: Evaluated
) -> Registered:
    if not ctx.tracker.run_id:
        raise RegistryError("registering needs an MLflow run; is register.enabled set?")
    published = register_version(
        cfg=ctx.cfg,
        tracker=ctx.tracker,
        work=ctx.paths.work_dir,
        model=train.model,
        prep=preprocess.preprocessor,
        contract=profile.contract,
        evaluated=evaluate,
        example=profile.example,
        raw_test_batches=lambda: _datasets.batches(_datasets.split_rows(ctx, "test")),
        extra={"reference.json": evaluate.reference} if evaluate.reference else None,
        fingerprint=ctx.fingerprint,
        config_hash=ctx.config_hash,
        run_key=ctx.keys.get("register"),
    )
    return Registered(**asdict(published))


def key_inputs(ctx: RunContext) -> dict[str, str]:
    """A version lives in one store: another store means registering again."""
    return {"store": ctx.paths.tracking_uri}


def record(ctx: RunContext, result: Registered) -> None:
    ctx.tracker.set_tags(
        {"raypipe.model": f"{result.model_name}/{result.model_version}", "raypipe.gate": result.gate_reason}
    )


def describe(ctx: RunContext, result: Registered) -> str:
    return f"{result.model_name} v{result.model_version} ({result.gate_reason})"
