// Umbrella header: the whole public API of tpembed.
#pragma once

#include "tpembed/checkpoint_shard.hpp"
#include "tpembed/communicator.hpp"
#include "tpembed/cuda.hpp"
#include "tpembed/dtype.hpp"
#include "tpembed/embedding.hpp"
#include "tpembed/error.hpp"
#include "tpembed/lookup.hpp"
#include "tpembed/numeric.hpp"
#include "tpembed/parallel_embedding.hpp"
#include "tpembed/quantize.hpp"
#include "tpembed/safetensors.hpp"
#include "tpembed/sharding.hpp"
#include "tpembed/tensor.hpp"
