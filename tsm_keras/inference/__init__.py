"""Running trained models on videos: `predict` (a clip's top classes from a `.keras` or
`.tflite` model) and `stream` (an online `.tflite` model fed frame by frame with its states).

The `tsm-predict` and `tsm-stream` commands (`tsm_keras/cli/`) are their command lines.
"""
