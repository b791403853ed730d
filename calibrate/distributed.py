"""Where a calibration's model passes run: this process, or Ray workers (`calibrate ... --workers N
[--ray-address ADDR]`).

Stage 2 of a run (and stage 1's Eq-4 scoring) is a series of *tasks* over fixed chunks of inputs: answer a batch of
yes/no questions under optional head scales (`binary`: Eq-4 scoring, the held-out K / α grid), answer with the
unedited model (`baseline`: `--max-correct`), or score every head (`score`: Eq 5-7). The same chunks run either on
the driver's own model (in the calling stage's loop, or through `LocalRunner`, which has `RayPool.map`) or
on N Ray actors, each holding its own copy of the model (one GPU per actor when the cluster has enough GPUs, else
an equal share of the CPU threads) (`RayPool`). So:

* every number a run records, hence the profile, is what the single-process run computes (same batches, same
  code; on CPU at the same thread count per process);
* Ray restarts an actor that dies and retries its chunk (`max_restarts`, `max_task_retries`): a killed worker
  costs at most the chunk it was computing; a killed driver resumes from the run directory with the same command;
* results come back in chunk order (`map`) or as they finish (`map_unordered`, for logs that record each chunk).

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


def run_task(host, task: str, args: tuple) -> Any:
    """Run one chunk's `task` on `host` (its `engine`, a `HeadEngine`, and its `attributor`, a
    `vseam.calibrate.attribution.HeadAttributor` of that engine):

    * `binary` (images, questions, scales): P(yes), P(no) per row under per-head `scales` (None: unedited), as
      float32 arrays;
    * `baseline` (images, questions, answers): the unedited model's `Baseline`;
    * `score` (images, questions, answers, method, heads): a chunk's baseline and Δp (`score_chunk`).
    """
    from vseam.calibrate.attribution import score_chunk

    if task == "binary":
        images, questions, scales = args
        probs = host.engine.binary(images, questions, scales)
        return probs["yes"].numpy(), probs["no"].numpy()
    if task == "baseline":
        return host.attributor.baseline(*args)
    if task == "score":
        return score_chunk(host.attributor, *args)
    raise ValueError(f"unknown calibration task {task!r}")


class LocalRunner:
    """The chunks run one after another on the driver's own model (`RayPool.map`'s interface)."""

    def __init__(self, engine):
        self.engine = engine
        self._attributor = None

    @property
    def attributor(self):
        """A `HeadAttributor` of the engine, made when a `baseline` or `score` task first needs it."""
        if self._attributor is None:
            from vseam.calibrate.attribution import HeadAttributor

            self._attributor = HeadAttributor(self.engine)
        return self._attributor

    def map(self, task: str, jobs: Iterable[tuple]) -> Iterator[Any]:
        for args in jobs:
            yield run_task(self, task, args)


class CalibrationWorker:
    """One Ray actor: a model copy and a `HeadAttributor` that runs whole chunks (`run_task`)."""

    def __init__(self, spec: WorkerSpec):
        import torch

        from vseam.calibrate.attribution import HeadAttributor
        from vseam.core.engine import HeadEngine

        torch.set_num_threads(spec.threads)
        self.engine = HeadEngine.from_pretrained(spec.model_dir, dtype=getattr(torch, spec.dtype), device=spec.device)
        self.attributor = HeadAttributor(self.engine, max_rows=spec.max_rows)

    def pid(self) -> int:
        return os.getpid()

    def run(self, task: str, args: tuple) -> Any:
        return run_task(self, task, args)


class RayPool:
    """N calibration actors on a Ray cluster (a local one unless `address` is given)."""

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
        actor = ray.remote(CalibrationWorker).options(num_cpus=min(threads, cpus), num_gpus=1 if use_gpu else 0,
                                                      **ACTOR_OPTIONS)
        self.actors = [actor.remote(spec) for _ in range(workers)]
        self.spec = spec

    def pids(self) -> list[int]:
        return self.ray.get([a.pid.remote() for a in self.actors])

    def map_unordered(self, task: str, jobs: Iterable[tuple]) -> Iterator[tuple[int, Any]]:
        """(index, result) of `task` on each job (its arguments) as workers finish them; one job per worker at a
        time, so a dead worker holds at most one chunk."""
        ray = self.ray
        jobs = iter(enumerate(jobs))
        running: dict[Any, tuple[int, Any]] = {}

        def submit(actor) -> bool:
            nxt = next(jobs, None)
            if nxt is None:
                return False
            i, args = nxt
            running[actor.run.remote(task, tuple(args))] = (i, actor)
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

    def map(self, task: str, jobs: Iterable[tuple]) -> Iterator[Any]:
        """The results of `task` on each job, in job order (a finished chunk waits for the ones before it)."""
        waiting: dict[int, Any] = {}
        nxt = 0
        for i, result in self.map_unordered(task, jobs):
            waiting[i] = result
            while nxt in waiting:
                yield waiting.pop(nxt)
                nxt += 1

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


__all__ = ["ACTOR_OPTIONS", "CalibrationWorker", "LocalRunner", "RayPool", "WorkerSpec", "import_ray",
           "run_task"]
