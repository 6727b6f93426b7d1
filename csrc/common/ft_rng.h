// ft_rng.h: the counter-based random numbers behind every minibatch order, for host and device.
//
// A stream id (derived in Python from (seed, stage, index)) and an epoch e give a key
//   key(s, e) = mix(mix(s) ^ e),
// and the epoch's permutation of 0..N-1 orders the indices i by (mix(key ^ (i * M)), i).
// Nothing depends on the order in which work happens to run, so a resumed or re-blocked run
// draws exactly the same batches. fasttrap/model/rng.py is the NumPy twin and is tested against this.
#pragma once
#include <cstdint>

#if !defined(FT_HD)
#if defined(__CUDACC__)
#define FT_HD __host__ __device__ __forceinline__
#else
#define FT_HD inline
#endif
#endif

namespace ft {

// splitmix64's finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
FT_HD uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

FT_HD uint64_t epoch_key(uint64_t stream, uint64_t epoch) { return mix64(mix64(stream) ^ epoch); }

FT_HD uint64_t sort_key(uint64_t key, uint64_t i) { return mix64(key ^ (i * 0xD1B54A32D192ED03ULL)); }

}  // namespace ft
