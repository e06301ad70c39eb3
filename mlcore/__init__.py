"""Machine learning for NeuroScan: preprocessing, training, evaluation and inference.

The pure modules here (everything except ``tasks``, ``apps``, ``checks`` and the
management commands) never import Django, so they run from the command line too.
"""
