// TsmTemporalShift: the temporal shift of tsm_keras.layers.TemporalShift as one
// TensorFlow CPU kernel, one read and one write of its input.
//
// `frames` holds the frames of each clip one after another in its first
// dimension, (N * T, ..., C). Channel group g, channels [g * fold, (g + 1) * fold)
// (cut at C), takes the value of frame t + offsets[g] of the same clip (zero where that frame
// is outside the clip); the channels after the groups are copied. The gradient
// is the same kernel with the offsets negated (registered in shift_kernel.py).
//
// Built on first use by tsm_keras/layers/shift_kernel.py against the installed
// TensorFlow's headers.

#include <algorithm>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace {

// A shift copies many short rows (one pixel's channel group: 128 bytes for 32
// float32 channels). In 64-byte blocks the compiler inlines the copy as vector
// moves; a libc call per row costs more than the copy itself.
inline void CopyBytes(char* __restrict target, const char* __restrict source, int64_t bytes) {
  int64_t done = 0;
  for (; done + 64 <= bytes; done += 64) __builtin_memcpy(target + done, source + done, 64);
  if (done < bytes) std::memcpy(target + done, source + done, bytes - done);
}

inline void ZeroBytes(char* target, int64_t bytes) {
  int64_t done = 0;
  for (; done + 64 <= bytes; done += 64) __builtin_memset(target + done, 0, 64);
  if (done < bytes) std::memset(target + done, 0, bytes - done);
}

}  // namespace

REGISTER_OP("TsmTemporalShift")
    .Input("frames: dtype")
    .Output("shifted: dtype")
    .Attr("dtype: {float, double, bfloat16, half}")
    .Attr("num_segments: int >= 1")
    .Attr("fold: int >= 0")
    .Attr("offsets: list(int)")
    .SetShapeFn([](shape_inference::InferenceContext* context) {
      context->set_output(0, context->input(0));
      return absl::OkStatus();
    });

class TsmTemporalShiftOp : public OpKernel {
 public:
  explicit TsmTemporalShiftOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("num_segments", &num_segments_));
    OP_REQUIRES_OK(context, context->GetAttr("fold", &fold_));
    OP_REQUIRES_OK(context, context->GetAttr("offsets", &offsets_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& frames = context->input(0);
    OP_REQUIRES(context, frames.dims() >= 2,
                errors::InvalidArgument("TsmTemporalShift: frames must have rank >= 2, got shape ",
                                        frames.shape().DebugString()));
    const int64_t num_frames = frames.dim_size(0);
    OP_REQUIRES(context, num_frames % num_segments_ == 0,
                errors::InvalidArgument("TsmTemporalShift: the first dimension of frames (", num_frames,
                                        ") must be a multiple of num_segments (", num_segments_, ")"));
    const int64_t channels = frames.dim_size(frames.dims() - 1);
    // Groups past the last channel are cut short or empty, as slices would be.
    const int64_t groups = std::min<int64_t>(offsets_.size(), fold_ > 0 ? (channels + fold_ - 1) / fold_ : 0);
    Tensor* shifted = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, frames.shape(), &shifted));
    if (frames.NumElements() == 0) return;

    const int64_t element_bytes = DataTypeSize(frames.dtype());
    const int64_t row_bytes = channels * element_bytes;  // one position's channels
    const int64_t rows_per_frame = frames.NumElements() / num_frames / channels;
    const int64_t frame_bytes = rows_per_frame * row_bytes;
    const int64_t fold_bytes = fold_ * element_bytes;
    const int64_t shifted_bytes = std::min(groups * fold_, channels) * element_bytes;
    const char* source = static_cast<const char*>(frames.tensor_data().data());
    char* target = const_cast<char*>(shifted->tensor_data().data());
    const int64_t num_segments = num_segments_;
    const std::vector<int32>& offsets = offsets_;

    auto shift_rows = [&](int64_t begin, int64_t end) {
      int64_t row = begin;
      while (row < end) {
        const int64_t frame = row / rows_per_frame;
        const int64_t time = frame % num_segments;
        const int64_t frame_end = std::min(end, (frame + 1) * rows_per_frame);
        const char* in = source + row * row_bytes;
        char* out = target + row * row_bytes;
        for (; row < frame_end; ++row, in += row_bytes, out += row_bytes) {
          for (int64_t group = 0; group < groups; ++group) {
            const int64_t other = time + offsets[group];
            const int64_t start = group * fold_bytes;
            const int64_t bytes = std::min(fold_bytes, row_bytes - start);
            if (other < 0 || other >= num_segments) {
              ZeroBytes(out + start, bytes);
            } else {
              CopyBytes(out + start, in + offsets[group] * frame_bytes + start, bytes);
            }
          }
          CopyBytes(out + shifted_bytes, in + shifted_bytes, row_bytes - shifted_bytes);
        }
      }
    };
    const DeviceBase::CpuWorkerThreads& workers = *context->device()->tensorflow_cpu_worker_threads();
    Shard(workers.num_threads, workers.workers, num_frames * rows_per_frame, 2 * row_bytes, shift_rows);
  }

 private:
  int num_segments_;
  int fold_;
  std::vector<int32> offsets_;
};

REGISTER_KERNEL_BUILDER(Name("TsmTemporalShift").Device(DEVICE_CPU), TsmTemporalShiftOp);

}  // namespace tensorflow
