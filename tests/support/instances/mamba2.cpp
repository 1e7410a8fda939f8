// Mamba2<float> and Mamba2<double>, compiled once for all the test executables (see SSM_NOINLINE in
// ssm/core/config.hpp; the tests are compiled with SSM_EXTERN_TEMPLATES).
#include "ssm/layers/mamba2.hpp"

template class ssm::Mamba2<float>;
template class ssm::Mamba2<double>;
