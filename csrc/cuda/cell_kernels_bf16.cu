// The __nv_bfloat16 instantiations of cell_kernels.cuh. One dtype per file: smaller nvcc jobs that run in parallel.
#include "cell_kernels.cuh"

namespace nrnm::cuda {

template cudaError_t step_forward<__nv_bfloat16>(const StepForwardParams<__nv_bfloat16>& p, cudaStream_t stream);
template cudaError_t step_backward<__nv_bfloat16>(const StepBackwardParams<__nv_bfloat16>& p, cudaStream_t stream);

}  // namespace nrnm::cuda
