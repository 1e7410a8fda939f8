# FindFFTW3: FFTW 3 in double (fftw3) and single (fftw3f) precision.
#
# Debian ships FFTW's pkg-config files but no CMake package, so this module looks for the headers
# and libraries directly, helped by pkg-config when it is there. It defines the imported targets
#   FFTW3::fftw3   double precision (fftw_*)
#   FFTW3::fftw3f  single precision (fftwf_*)
# and FFTW3_FOUND, FFTW3_INCLUDE_DIR, FFTW3_LIBRARY, FFTW3F_LIBRARY. When FFTW's threads libraries are
# installed (Debian's libfftw3-dev ships them), also
#   FFTW3::fftw3_threads   libfftw3_threads  (fftw_make_planner_thread_safe, ...), linking FFTW3::fftw3
#   FFTW3::fftw3f_threads  libfftw3f_threads (fftwf_make_planner_thread_safe, ...), linking FFTW3::fftw3f
# and FFTW3_THREADS_FOUND, FFTW3_THREADS_LIBRARY, FFTW3F_THREADS_LIBRARY. They are optional: a build
# without them is still FFTW3_FOUND.

find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(PC_FFTW3 QUIET fftw3)
  pkg_check_modules(PC_FFTW3F QUIET fftw3f)
endif()

find_path(FFTW3_INCLUDE_DIR fftw3.h HINTS ${PC_FFTW3_INCLUDE_DIRS})
find_library(FFTW3_LIBRARY NAMES fftw3 HINTS ${PC_FFTW3_LIBRARY_DIRS})
find_library(FFTW3F_LIBRARY NAMES fftw3f HINTS ${PC_FFTW3F_LIBRARY_DIRS})
find_library(FFTW3_THREADS_LIBRARY NAMES fftw3_threads HINTS ${PC_FFTW3_LIBRARY_DIRS})
find_library(FFTW3F_THREADS_LIBRARY NAMES fftw3f_threads HINTS ${PC_FFTW3F_LIBRARY_DIRS})
if(FFTW3_THREADS_LIBRARY AND FFTW3F_THREADS_LIBRARY)
  set(FFTW3_THREADS_FOUND TRUE)
else()
  set(FFTW3_THREADS_FOUND FALSE)
endif()
set(FFTW3_VERSION ${PC_FFTW3_VERSION})

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(FFTW3
  REQUIRED_VARS FFTW3_INCLUDE_DIR FFTW3_LIBRARY FFTW3F_LIBRARY
  VERSION_VAR FFTW3_VERSION)

if(FFTW3_FOUND)
  if(NOT TARGET FFTW3::fftw3)
    add_library(FFTW3::fftw3 UNKNOWN IMPORTED)
    set_target_properties(FFTW3::fftw3 PROPERTIES
      IMPORTED_LOCATION "${FFTW3_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${FFTW3_INCLUDE_DIR}")
  endif()
  if(NOT TARGET FFTW3::fftw3f)
    add_library(FFTW3::fftw3f UNKNOWN IMPORTED)
    set_target_properties(FFTW3::fftw3f PROPERTIES
      IMPORTED_LOCATION "${FFTW3F_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${FFTW3_INCLUDE_DIR}")
  endif()
  if(FFTW3_THREADS_FOUND)
    # The static libfftw3*_threads.a need the threads library; the shared ones already link it.
    find_package(Threads QUIET)
    foreach(prec fftw3 fftw3f)
      string(TOUPPER ${prec} PREC)
      if(NOT TARGET FFTW3::${prec}_threads)
        add_library(FFTW3::${prec}_threads UNKNOWN IMPORTED)
        set_target_properties(FFTW3::${prec}_threads PROPERTIES
          IMPORTED_LOCATION "${${PREC}_THREADS_LIBRARY}"
          INTERFACE_INCLUDE_DIRECTORIES "${FFTW3_INCLUDE_DIR}"
          INTERFACE_LINK_LIBRARIES "FFTW3::${prec};$<$<TARGET_EXISTS:Threads::Threads>:Threads::Threads>")
      endif()
    endforeach()
  endif()
endif()
mark_as_advanced(FFTW3_INCLUDE_DIR FFTW3_LIBRARY FFTW3F_LIBRARY FFTW3_THREADS_LIBRARY FFTW3F_THREADS_LIBRARY)
