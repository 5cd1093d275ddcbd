"""Training scripts and baselines for worldfm-env (CleanRL-style single-file scripts).

Each script runs on its own (``python agents/evaluate.py --help``) or as a module
(``python -m agents.evaluate``); ``from agents import evaluate`` gives its function API.
"""
