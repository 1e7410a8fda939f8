// S4<float> and S4<double>, compiled once for all the test executables (see SSM_NOINLINE in
// ssm/core/config.hpp; the tests are compiled with SSM_EXTERN_TEMPLATES).
#include "ssm/layers/s4.hpp"

template class ssm::S4<float>;
template class ssm::S4<double>;
