"""Head attribution on Ray workers (`calibrate ... --workers N [--ray-address ADDR]`).

The single-process run (`vseam.calibrate.attribution.attribute_units`) scores a run's inputs in fixed chunks of
`--batch` questions and appends one row per input to the run directory's log. With `--workers N` the *same chunks*
go to N Ray actors, each holding its own copy of the model (one GPU per actor when the cluster has enough GPUs,
else an equal share of the CPU threads), and the driver appends each chunk's rows to the same log as chunks
finish. So:

* the Δp of every input, hence the profile, is what the single-process run computes (same batches, same code);
* Ray restarts an actor that dies and retries its chunk (`max_restarts`, `max_task_retries`): a killed worker
  costs at most the chunk it was computing; a killed driver resumes from the log with the same command;
* the progress bar counts questions done over all workers.

The driver reads the images and ships them with each chunk, so workers need the model (a shared path or the hub
cache) but not the dataset. Ray is an optional extra (`pip install 'vseam[ray]'`, installed by the project's setup).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable, Iterator

from vseam.core.errors import UserError

#: Ray actor options: restart a dead worker (reloading the model) and retry the chunk it held, without limit
ACTOR_OPTIONS = {"max_restarts": -1, "max_task_retries": -1}


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--workers needs Ray: pip install 'vseam[ray]' (or pip install ray), or drop --workers "
                        "to attribute in this process") from None
    return ray


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """What every worker loads: the model checkpoint and how to run it."""

    model_dir: str
    dtype: str = "float32"
    max_rows: int = 32
    threads: int = 1
    device: str = "cpu"


class AttributionWorker:
    """One Ray actor: a model copy and a `HeadAttributor` that scores whole chunks."""

    def __init__(self, spec: WorkerSpec):
        import torch

        from vseam.calibrate.attribution import HeadAttributor
        from vseam.core.engine import HeadEngine

        torch.set_num_threads(spec.threads)
        engine = HeadEngine.from_pretrained(spec.model_dir, dtype=getattr(torch, spec.dtype), device=spec.device)
        self.attributor = HeadAttributor(engine, max_rows=spec.max_rows)

    def pid(self) -> int:
        return os.getpid()

    def score(self, images, questions, answers, method: str, heads) -> tuple[Any, Any]:
        from vseam.calibrate.attribution import score_chunk

        return score_chunk(self.attributor, images, questions, answers, method, heads)


class RayPool:
    """N attribution actors on a Ray cluster (a local one unless `address` is given)."""

    def __init__(self, spec: WorkerSpec, workers: int, address: str | None = None):
        if workers < 1:
            raise UserError(f"--workers {workers}: give at least 1")
        ray = import_ray()
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=max(workers, os.cpu_count() or 1), **kwargs)
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
        use_gpu = spec.device != "cpu" and gpus >= workers
        threads = max(1, cpus // workers)
        spec = dataclasses.replace(spec, threads=threads, device="cuda" if use_gpu else "cpu")
        actor = ray.remote(AttributionWorker).options(num_cpus=min(threads, cpus), num_gpus=1 if use_gpu else 0,
                                                      **ACTOR_OPTIONS)
        self.actors = [actor.remote(spec) for _ in range(workers)]
        self.spec = spec

    def pids(self) -> list[int]:
        return self.ray.get([a.pid.remote() for a in self.actors])

    def map_unordered(self, jobs: Iterable[tuple], method: str, heads) -> Iterator[tuple[int, tuple]]:
        """(index, result) for each job (images, questions, answers) as workers finish them; one job per worker at
        a time, so a dead worker holds at most one chunk."""
        ray = self.ray
        jobs = iter(enumerate(jobs))
        running: dict[Any, tuple[int, Any]] = {}

        def submit(actor) -> bool:
            nxt = next(jobs, None)
            if nxt is None:
                return False
            i, (images, questions, answers) = nxt
            running[actor.score.remote(images, questions, answers, method, heads)] = (i, actor)
            return True

        for actor in self.actors:
            if not submit(actor):
                break
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            ref = done[0]
            i, actor = running.pop(ref)
            result = ray.get(ref)
            submit(actor)
            yield i, result

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # already gone
                pass
        self.actors = []
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()

    def __enter__(self) -> "RayPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
