"""Kaizen's shared leaf: what every layer uses (settings, errors, prompts, base-model loading,
adapter storage, knowledge-file formats, text folding, round metrics, and the seams launch.py
wires). It imports nothing from bot/, trainer/, scheduler.py or launch.py; see
docs/architecture.md.
"""
