// The float instantiations of cell_kernels.cuh. One dtype per file: smaller nvcc jobs that run in parallel.
#include "cell_kernels.cuh"

namespace nrnm::cuda {

template cudaError_t step_forward<float>(const StepForwardParams<float>& p, cudaStream_t stream);
template cudaError_t step_backward<float>(const StepBackwardParams<float>& p, cudaStream_t stream);

}  // namespace nrnm::cuda
