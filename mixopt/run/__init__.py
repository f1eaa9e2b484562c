"""The run layer: study config, the plan built from it once, the ask/run/tell loop, executors,
outputs and the transfer check (``mixopt run``, ``mixopt transfer``)."""
