"""Policy: what to back up when, what to keep, and what the record says about it.

``schedules`` is the schedule model and cron (pure), ``retention`` plans what to keep and delete
(pure), ``stats`` computes statistics, health and metrics from records (pure), and ``sources``
merges where schedules come from (built-in defaults < YAML < environment < runtime changes in
``schedules.toml``). The use cases in ``sbbackup.ops`` feed them the catalog and ``now``; nothing
here prints, and only ``sources`` touches the state directory.
"""
