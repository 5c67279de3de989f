// Just enough of CUDA's execution model on the host to run a kernel without __syncthreads
// or shared memory one thread at a time: the qualifiers become nothing and the built-in
// indices become variables that `launch` walks through the grid.
#pragma once

#include <cuda_runtime.h>

#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __launch_bounds__
#define __launch_bounds__(threads)

namespace emulation {
inline dim3 blockIdx, threadIdx, gridDim, blockDim;

// Runs kernel(args...) for every thread of the grid, in order.
template <typename Kernel, typename... Args>
void launch(dim3 grid, dim3 block, Kernel kernel, const Args&... args) {
  gridDim = grid;
  blockDim = block;
  for (blockIdx.z = 0; blockIdx.z < grid.z; ++blockIdx.z)
    for (blockIdx.y = 0; blockIdx.y < grid.y; ++blockIdx.y)
      for (blockIdx.x = 0; blockIdx.x < grid.x; ++blockIdx.x)
        for (threadIdx.z = 0; threadIdx.z < block.z; ++threadIdx.z)
          for (threadIdx.y = 0; threadIdx.y < block.y; ++threadIdx.y)
            for (threadIdx.x = 0; threadIdx.x < block.x; ++threadIdx.x) kernel(args...);
}
}  // namespace emulation

using emulation::blockDim;
using emulation::blockIdx;
using emulation::gridDim;
using emulation::threadIdx;
