"""Video input pipelines for TSM: MMAction2 lists, sampling, augmentation.

Public API:

- `DataConfig` (`tsm_keras.data.config`): every data option, validated by
  `DataConfig.from_dict` (the `data:` section of a training YAML).
- `build_train_dataset(config, batch_size, seed, num_shards, shard_index)`:
  infinite, shuffled `(clips (B, T, H, W, 3) float32, labels (B,) int32)`.
- `build_test_dataset(config, split)`: per video `(views (V, T, H, W, 3),
  label, video_index)`, V = temporal clips x crops.
- `num_train_videos(config)` / `num_videos(config, split)`: epoch sizes.
- `synthetic`: the built-in temporal dataset (in memory, or `write_videos`).
- `DataReport` / `DataError`: skipped-input accounting; `data_error_line`
  recovers a `DataError`'s one line from the `tf.errors.OpError` carrying it.
"""

from tsm_keras.data import synthetic
from tsm_keras.data.annotations import VideoRecord, load_label_map, read_list
from tsm_keras.data.config import DataConfig, SyntheticConfig
from tsm_keras.data.pipeline import (
    build_test_dataset,
    build_train_dataset,
    num_train_videos,
    num_videos,
    resolve_flip_label_map,
)
from tsm_keras.data.report import DataError, DataReport, data_error_line
from tsm_keras.data.sampling import FrameSampler, dense_sample_frames, sample_frames
