// The __half instantiations of cell_kernels.cuh. One dtype per file: smaller nvcc jobs that run in parallel.
#include "cell_kernels.cuh"

namespace nrnm::cuda {

template cudaError_t step_forward<__half>(const StepForwardParams<__half>& p, cudaStream_t stream);
template cudaError_t step_backward<__half>(const StepBackwardParams<__half>& p, cudaStream_t stream);

}  // namespace nrnm::cuda
