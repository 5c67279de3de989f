// The fused element-wise step of csrc/nrnm_cell.h over one batch row of H units.
// Pointers are to one row: gates / a_* / da (4H, gates i, f, g, o), everything else (H).
#pragma once

#include <cstdint>

namespace nrnm {

// Forward of one active row: a_in + a_rec are the gate pre-activations, mc the memory term,
// h and c the state (updated in place); h' is written to h_out and line_out as well.
void forward_row(int64_t H, const float* a_in, const float* a_rec, const float* mc, float* h, float* c,
                 float* gates, float* cell_out, float* h_out, float* line_out);
void forward_row(int64_t H, const double* a_in, const double* a_rec, const double* mc, double* h, double* c,
                 double* gates, double* cell_out, double* h_out, double* line_out);

// Backward of one active row: dh (from later steps) + d_out + d_line is the gradient of h';
// dc (in: of the new cell; out: of the previous cell) is updated in place.
void backward_row(int64_t H, const float* gates, const float* c_prev, const float* cell, const float* dh,
                  const float* d_out, const float* d_line, float* dc, float* da, float* dmc);
void backward_row(int64_t H, const double* gates, const double* c_prev, const double* cell, const double* dh,
                  const double* d_out, const double* d_line, double* dc, double* da, double* dmc);

}  // namespace nrnm
