# TORCH_CUDA_ARCH_LIST ("8.0;9.0", torch's spelling, "+PTX" allowed) -> CMake's
# CUDA_ARCHITECTURES ("80-real;90-real", "90" keeps PTX). Default 8.0;9.0.
# Shared by the extension build and the torch-free compile check in cuda/.
set(_arch_list "$ENV{TORCH_CUDA_ARCH_LIST}")
if(_arch_list STREQUAL "")
  set(_arch_list "8.0;9.0")
endif()
string(REPLACE " " ";" _arch_list "${_arch_list}")
set(PYGEN_CUDA_ARCHITECTURES)
foreach(_arch ${_arch_list})
  string(REGEX MATCH "^([0-9]+)\\.([0-9]+)([a-z]?)(\\+PTX)?$" _ok "${_arch}")
  if(NOT _ok)
    message(FATAL_ERROR "TORCH_CUDA_ARCH_LIST entry '${_arch}' is not like 8.0, 9.0a or 9.0+PTX")
  endif()
  set(_num "${CMAKE_MATCH_1}${CMAKE_MATCH_2}${CMAKE_MATCH_3}")
  if(CMAKE_MATCH_4)
    list(APPEND PYGEN_CUDA_ARCHITECTURES "${_num}")
  else()
    list(APPEND PYGEN_CUDA_ARCHITECTURES "${_num}-real")
  endif()
endforeach()
string(REPLACE ";" " " PYGEN_CUDA_ARCHS "${_arch_list}")
# The shared numerics (csrc/common/math.h) use __fmul_rn/__fadd_rn where rounding must
# match the host, which nvcc never contracts, so the usual --fmad=true stays.
set(PYGEN_NVCC_FLAGS -O3 -lineinfo --expt-relaxed-constexpr)
