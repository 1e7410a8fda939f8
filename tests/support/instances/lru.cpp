// LinearRecurrentUnit<float> and LinearRecurrentUnit<double>, compiled once for all the test executables (see SSM_NOINLINE in
// ssm/core/config.hpp; the tests are compiled with SSM_EXTERN_TEMPLATES).
#include "ssm/layers/lru.hpp"

template class ssm::LinearRecurrentUnit<float>;
template class ssm::LinearRecurrentUnit<double>;
