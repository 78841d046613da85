"""Names people give things (workflows, categories, teams): Chinese as welcome as English.

Such a name is only ever shown and looked up; URLs use ids, and nothing that reaches a shell, a file path or a
Kubernetes object is made from it. Identifiers that do reach those (node and parameter names: shell
variables; module names: image names) keep their ASCII rules in ``spec.py``.
"""

from __future__ import annotations

MAX_LENGTH = 63


def _allowed(char: str) -> bool:
    if char.isascii():
        return char.islower() or char.isdigit() or char == "-"
    return char.isalnum()


def is_human_name(value: str, max_length: int = MAX_LENGTH) -> bool:
    """1 to ``max_length`` characters: letters of any script (ASCII ones lowercase), digits and '-', starting
    with a letter or digit — ``图像分类-训练``, ``数据处理``, ``data-processing``."""
    return 0 < len(value) <= max_length and value[0] != "-" and all(_allowed(c) for c in value)
