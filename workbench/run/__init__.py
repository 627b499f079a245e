"""Running a spec: the plan, the one orchestrator, and the two executors that share one contract.

- ``plan``: what a spec would do (cells, images, already done, batches, time, cost); nothing runs
- ``runner``: ``run_experiment`` / ``run_plan``, the only orchestrator (parent run, flush, grids)
- ``context``: ``ExecutionContext`` (what both executors take) and ``RunSummary``
- ``batch``: one batch through its backend: the retry and out-of-memory policy
- ``local_executor``: batches in this process (a thread pool for API backends)
- ``ray_executor`` / ``ray_worker``: batches on Ray actors, the driver and the actor's body
"""
