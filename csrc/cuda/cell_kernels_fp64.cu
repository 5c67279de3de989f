// The double instantiations of cell_kernels.cuh. One dtype per file: smaller nvcc jobs that run in parallel.
#include "cell_kernels.cuh"

namespace nrnm::cuda {

template cudaError_t step_forward<double>(const StepForwardParams<double>& p, cudaStream_t stream);
template cudaError_t step_backward<double>(const StepBackwardParams<double>& p, cudaStream_t stream);

}  // namespace nrnm::cuda
