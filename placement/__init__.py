"""placement: CPU-or-GPU placement (and edge cores and GPU memory cap) for ML jobs by a joint
speed/energy threshold, learnt online from measured outcomes.

One installed namespace, layered; each layer imports only the layers below it
(``tests/test_architecture.py`` fails on an upward edge):

====================  =====================================================================
``placement.core``    the domain: job, hardware, outcome, threshold, decision, trace, catalogue
``placement.lab``     measurement: the probe, energy meter, step timing, profiler, workload zoo
``placement.model``   the performance model and the estimate/feature path the policy decides on
``placement.envs``    the Gymnasium environment (source folder ``envs/``)
``placement.agents``  baselines, the 2-layer DNN, warm-started PPO, evaluation (``agents/``)
``placement.serve``   the Ray Serve app, store, learner and client (``serve/``)
``placement.cli``     the command line, at the top
====================  =====================================================================

``envs/``, ``agents/`` and ``serve/`` are top-level folders of the repository, installed as
subpackages of this namespace (``pyproject.toml`` maps them; in a checkout the links
``placement/envs`` etc. point at them so type checkers see one tree).
"""
