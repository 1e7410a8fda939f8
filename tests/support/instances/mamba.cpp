// Mamba<float> and Mamba<double>, compiled once for all the test executables (see SSM_NOINLINE in
// ssm/core/config.hpp; the tests are compiled with SSM_EXTERN_TEMPLATES).
#include "ssm/layers/mamba.hpp"

template class ssm::Mamba<float>;
template class ssm::Mamba<double>;
