// Per-pixel predictors, softmax and metric counts on the device. Layout everywhere: a batch
// of probability (or logit) maps (B, C, HW), C order; one thread per pixel, classes walked
// in order, so every result is the CPU path's bit for bit (no reduction across threads
// except the integer counts, whose sums do not depend on the order of the atomics).

#include <stdint.h>

// argmax over classes: the first class of the largest value, as the CPU path (strict `>`,
// so a NaN never replaces the running maximum).
extern "C" __global__ void argmax_f32(const float* probs, int64_t* classes, uint32_t batch,
                                      uint32_t channels, uint32_t pixels) {
  uint64_t index = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (index >= (uint64_t)batch * pixels) return;
  uint64_t b = index / pixels, i = index % pixels;
  const float* row = probs + b * channels * pixels + i;
  float top = row[0];
  int64_t best = 0;
  for (uint32_t c = 1; c < channels; ++c) {
    float p = row[(uint64_t)c * pixels];
    if (p > top) {
      top = p;
      best = c;
    }
  }
  classes[index] = best;
}

// threshold: each class's mask is p > 0.5 (the same f32 comparison as the CPU path).
extern "C" __global__ void threshold_f32(const float* probs, uint8_t* masks, uint64_t count) {
  uint64_t index = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (index < count) masks[index] = probs[index] > 0.5f ? 1 : 0;
}

// softmax over classes of logits / T, per pixel, in the CPU path's order of operations
// (runner::inference::softmax): x / T (skipped at T = 1), the max, the f32 sum of
// exp(x - max) in class order, then exp(x - max - ln sum). expf and logf are CUDA's, within
// 2 ulp of the CPU's libm: probabilities agree to float32 noise, not bit for bit.
extern "C" __global__ void softmax_temperature_f32(const float* logits, float* probs,
                                                   uint32_t batch, uint32_t channels,
                                                   uint32_t pixels, float temperature) {
  uint64_t index = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (index >= (uint64_t)batch * pixels) return;
  uint64_t b = index / pixels, i = index % pixels;
  const float* in = logits + b * channels * pixels + i;
  float* out = probs + b * channels * pixels + i;
  bool scale = temperature != 1.0f;
  float top = -INFINITY;
  for (uint32_t c = 0; c < channels; ++c) {
    float x = in[(uint64_t)c * pixels];
    top = fmaxf(top, scale ? x / temperature : x);
  }
  float sum = 0.0f;
  for (uint32_t c = 0; c < channels; ++c) {
    float x = in[(uint64_t)c * pixels];
    sum += expf((scale ? x / temperature : x) - top);
  }
  float log_sum = logf(sum);
  for (uint32_t c = 0; c < channels; ++c) {
    float x = in[(uint64_t)c * pixels];
    out[(uint64_t)c * pixels] = expf((scale ? x / temperature : x) - top - log_sum);
  }
}

// Per-image confusion counts of a class map against its labels, into counts (B, 3, C): tp,
// fp and fn per class. Pixels labelled `ignore` are left out; the host has checked that the
// other labels lie in 0..C. A prediction outside 0..C (void) claims no class: it counts as
// a false negative of the label only, as the CPU path. Integer atomics: the sums are the
// same whatever order the threads add in.
extern "C" __global__ void confusion_counts(const int64_t* classes, const int64_t* labels,
                                            uint32_t batch, uint32_t channels, uint32_t pixels,
                                            int64_t ignore, unsigned long long* counts) {
  uint64_t index = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (index >= (uint64_t)batch * pixels) return;
  uint64_t b = index / pixels;
  int64_t label = labels[index], pred = classes[index];
  if (label == ignore || label < 0 || label >= (int64_t)channels) return;
  unsigned long long* tp = counts + b * 3 * channels;
  unsigned long long* fp = tp + channels;
  unsigned long long* fn = fp + channels;
  if (pred == label) {
    atomicAdd(tp + label, 1ull);
  } else {
    atomicAdd(fn + label, 1ull);
    if (pred >= 0 && pred < (int64_t)channels) atomicAdd(fp + pred, 1ull);
  }
}
