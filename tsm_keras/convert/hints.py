"""What a checkpoint's stored training config and its file name say about the model.

Both are read as text with regular expressions, never executed.
"""

import re

NON_LOCAL_HINTS = {
    "dot_product": ("dot_product", "dot-product", "dotproduct"),
    "embedded_gaussian": ("embedded_gaussian", "embedded-gaussian", "embeddedgaussian", "embedgauss"),
    "gaussian": ("gaussian", "nl-gaussian", "nonlocalgauss"),
}


def _dict_call(text, name):
    """The text inside `name=dict(...)` (balanced parentheses), or None."""
    match = re.search(rf"\b{name}\s*=\s*dict\(", text or "")
    if not match:
        return None
    depth, start = 1, match.end()
    for position in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[position], 0)
        if depth == 0:
            return text[start:position]
    return None


def _int_setting(text, name):
    match = re.search(rf"\b{name}\s*=\s*(\d+)", text or "")
    return int(match.group(1)) if match else None


def config_hints(config_text):
    """`num_segments`, `backbone_segments`, `shift_div`, `non_local` from config text."""
    hints = {}
    if not config_text:
        return hints
    backbone = _dict_call(config_text, "backbone")
    head = _dict_call(config_text, "cls_head")
    head_segments = _int_setting(head, "num_segments")
    backbone_segments = _int_setting(backbone, "num_segments")
    if head_segments or backbone_segments:
        hints["num_segments"] = head_segments or backbone_segments
    if backbone_segments:
        hints["backbone_segments"] = backbone_segments
    shift_div = _int_setting(backbone, "shift_div")
    if shift_div:
        hints["shift_div"] = shift_div
    non_local_cfg = _dict_call(backbone or "", "non_local_cfg")
    mode = re.search(r"\bmode\s*=\s*['\"](\w+)['\"]", non_local_cfg or "")
    if mode:
        hints["non_local"] = mode.group(1)
    return hints


def filename_hints(filename):
    """`num_segments`, `shift_div`, `non_local` from a model-zoo file name."""
    name = filename.lower()
    hints = {}
    match = re.search(r"1x1x(\d+)", name) or re.search(r"segment(\d+)", name)
    if match:
        hints["num_segments"] = int(match.group(1))
    match = re.search(r"_shift(\d+)", name)
    if match:
        hints["shift_div"] = int(match.group(1))
    for mode, spellings in NON_LOCAL_HINTS.items():
        if any(spelling in name for spelling in spellings):
            hints["non_local"] = mode
            break
    return hints
