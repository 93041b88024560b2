-- ft.help.builtins: the documentation of the functions the C module defines (bindings/*.c),
-- which have no Lua source for ft.help to read. ft.help and docs/gen_api.lua read it; the
-- docs test fails when a public C function has no entry here or an entry names nothing.
--
-- One entry per public name, { name, text }, in the format of the `---` doc comments: the
-- first line says what it does and how it is called, the next lines add what a caller needs.
-- A name is the path a user types: "ft.zeros", "ft.image.load", "ft.Tensor:matmul" (a method,
-- t:matmul(u)). A function bound under two names (ft.exp and t:exp) has one entry.
return {
  -- ---- the module and the tensor class ------------------------------------------------------
  { "ft", [=[
ft: tensors with reverse-mode autograd, layers, optimizers and file formats for fine-tuning.
local ft = require "ft" (preloaded as the global ft in ftlua). The C module defines tensors,
their math and the file formats; its Lua submodules load on first use: ft.nn, ft.optim,
ft.peft, ft.train, ft.data, ft.text, ft.models, ft.plot ... (ft.foo is bindings/lua/ft/foo.lua).
Dims, positions and every index value are 1-based; negative dims count from the end.]=] },
  { "ft.Tensor", kind = "class", [=[
ft.Tensor: the tensor class (values of one dtype, a shape of up to 8 dims) and its methods.
Made by ft.tensor, ft.zeros, ft.randn ...; methods are called as t:matmul(u). Operators
t + u, t - u, t * u, t / u, t ^ p, -t work elementwise with broadcasting (numbers allowed);
#t is t:size(1); t[i] is t:select(1, i). Fields: t.requires_grad (read and assigned),
t.grad, t.is_leaf, t.grad_fn. print(t) shows the values, then the dtype and shape.
dtypes: "float32" ("float") computes; "int64" ("long") holds indices and labels; "bfloat16",
"float16" ("half") and "float64" ("double") are storage dtypes: they hold values (frozen weights,
checkpoints), and ops compute on them in float32. The rule: a computing op (arithmetic,
comparisons, reductions, softmax, matmul, the layers of ft.nn.functional) converts each
bfloat16 / float16 / float64 argument to float32 first, differentiably, and returns float32, so
activations are float32 and a gradient flows back rounded to the argument's dtype; mixed dtypes
compute in float32. View, shape and copy ops (view, reshape, transpose, permute, narrow, select,
t[i], expand, squeeze, contiguous, clone, detach, copy_, fill_, cat, index_select, gather) keep
the dtype. F.linear and F.embedding read a half weight a block of rows at a time, never the whole
weight in float32. A leaf's grad has its dtype (a bfloat16 leaf's grad is bfloat16); optimizers
take float32 parameters only.]=] },

  -- ---- creation -------------------------------------------------------------------------------
  { "ft.tensor", [=[
ft.tensor(data [, {dtype=, requires_grad=}]): a new tensor from nested tables, a number or a tensor.
ft.tensor({{1, 2}, {3, 4}}) is 2x2 float32; dtype "int64" keeps integers exact; "bfloat16" and
"float16" round each number to nearest (ties to even, through float32 as torch does); a tensor is
copied (detached) and converted. Ragged tables and non-numbers are errors.]=] },
  { "ft.zeros", [=[
ft.zeros(d1, d2, ... [, opts]) or ft.zeros({d1, d2, ...} [, opts]): a tensor filled with 0.
opts: {dtype = "float32" | "int64" | "bfloat16" | "float16" | "float64" (or "float", "long", "half",
"double"), requires_grad = false}; an unknown dtype is an error listing these.]=] },
  { "ft.ones", [=[
ft.ones(d1, d2, ... [, opts]) or ft.ones({d1, ...} [, opts]): a tensor filled with 1 (options as ft.zeros).]=] },
  { "ft.empty", [=[
ft.empty(d1, d2, ... [, opts]): a new tensor of that shape (zero-filled here; options as ft.zeros).]=] },
  { "ft.full", [=[
ft.full({d1, d2, ...}, value [, opts]): a tensor filled with value (options as ft.zeros).]=] },
  { "ft.randn", [=[
ft.randn(d1, d2, ... [, {dtype=, requires_grad=}]): samples of the standard normal distribution.
Drawn in float32 from the one generator seeded by ft.manual_seed; dtype (a float dtype, default
"float32") rounds them once.]=] },
  { "ft.rand", [=[
ft.rand(d1, d2, ... [, {dtype=, requires_grad=}]): samples uniform in [0, 1) (float32, or rounded to a float dtype).]=] },
  { "ft.randint", [=[
ft.randint(low, high, shape): int64 integers uniform in [low, high], both ends included.
shape is a table {d1, ...} or integers.]=] },
  { "ft.randperm", [=[
ft.randperm(n): a random permutation of 1..n as an int64 tensor.]=] },
  { "ft.arange", [=[
ft.arange([start,] stop [, step] [, {dtype=}]): start, start + step, ... below stop (as torch.arange).
int64 when every argument is an integer, float32 otherwise: ft.arange(0, 10) is 0..9; any dtype
may be asked for.]=] },
  { "ft.zeros_like", [=[
ft.zeros_like(t [, {dtype=}]): zeros of t's shape and dtype.]=] },
  { "ft.ones_like", [=[
ft.ones_like(t [, {dtype=}]): ones of t's shape and dtype.]=] },
  { "ft.randn_like", [=[
ft.randn_like(t [, {dtype=}]): standard normal samples of t's shape and (float) dtype.]=] },
  { "ft.is_tensor", [=[
ft.is_tensor(v): true when v is a tensor.]=] },

  -- ---- runtime ---------------------------------------------------------------------------------
  { "ft.manual_seed", [=[
ft.manual_seed(seed): seeds the one generator behind randn, rand, randint, dropout and shuffles.
The same seed and thread count give the same numbers.]=] },
  { "ft.set_num_threads", [=[
ft.set_num_threads(n): threads for OpenMP loops and OpenBLAS together (default: the cores).]=] },
  { "ft.get_num_threads", [=[
ft.get_num_threads(): the number of threads ops use.]=] },
  { "ft.get_rng_state", [=[
ft.get_rng_state(): the generator's state as an int64 tensor of 4 words, for checkpoints.]=] },
  { "ft.set_rng_state", [=[
ft.set_rng_state(state): restores a state from ft.get_rng_state(), so a resumed run draws the same numbers.]=] },
  { "ft.isatty", [=[
ft.isatty([file or fd]): true when the file (default: stderr) is a terminal (for progress bars).]=] },
  { "ft.clock", [=[
ft.clock(): monotonic wall-clock seconds, for timing and ETAs.]=] },
  { "ft.profile_report", [=[
ft.profile_report() -> {op = {calls =, seconds =}}: with FT_PROFILE=1 in the environment when ft
loads, every C-bound function, tensor method and arithmetic operator counts its calls and self
time (less the profiled calls inside it); this prints the ops by self time to stderr and
returns them. A profiled run also prints the table at exit: FT_PROFILE=1 ftlua script.lua.
Backward passes are broken down by graph node: "backward:<op>" (a checkpoint node's time
includes its recomputation).]=] },
  { "ft.live_bytes", [=[
ft.live_bytes(): bytes held by tensor storages now.]=] },
  { "ft.peak_bytes", [=[
ft.peak_bytes(): the most ft.live_bytes() reached since the last ft.reset_peak_bytes().]=] },
  { "ft.reset_peak_bytes", [=[
ft.reset_peak_bytes(): starts a new peak measurement at the current live bytes.]=] },
  { "ft.resident_bytes", [=[
ft.resident_bytes() -> rss, peak: the process's resident memory now and the most it has held
(Linux's VmRSS and VmHWM), in bytes: what the allocator's cache, libraries and mapped files
hold beside the tensors; nothing where /proc/self/status does not exist.]=] },
  { "ft.empty_cache", [=[
ft.empty_cache(): returns the allocator's cached free blocks to the system.]=] },
  { "ft.kernels", [=[
ft.kernels() -> {blas =, blas_config =, conv =, dnnl_isa =, matmul_precision =, matmul_bf16 =}:
the kernels this process runs: OpenBLAS's core ("Haswell", "SkylakeX", "Cooperlake" ...: chosen
by cpuid, or OPENBLAS_CORETYPE) and build configuration; the convolution path ("auto": oneDNN
where it is faster, its Winograd kernels for 3x3 stride-1 layers, im2col + OpenBLAS for 1x1
convolutions and stems; "gemm", "dnnl" (oneDNN's direct kernels everywhere) or "winograd"
(oneDNN everywhere, Winograd wherever it has the kernel) as FT_CONV forces; "invalid" for a
bad FT_CONV, which every convolution then reports); oneDNN's
instruction set ("avx512_core_bf16", "avx2" ...; nil in a build without oneDNN); the matmul
precision (ft.set_matmul_precision; "invalid" for a bad FT_MATMUL_PRECISION, which every linear
then reports); the oneDNN kernel of bfloat16 products ("brg:avx512_core_bf16"; nil where there
is none, and bfloat16 precision then computes as float32).]=] },
  { "ft.set_matmul_precision", [=[
ft.set_matmul_precision(name) -> the previous precision. How products with a bfloat16 weight
(linear layers of a bfloat16 model, a tied bfloat16 lm_head, NF4 / int8 quantised linears) are
computed. "float32" (the default): the weight widened to float32, float32 multiplies; the
result is the float32 product of the weight's values. "bfloat16": the activations (in backward,
the output gradients) rounded to bfloat16 and multiplied on oneDNN's bf16 dot-product kernels
with float32 sums (quantised weights are dequantised to bfloat16): about twice the float32 rate
on CPUs with AVX512-BF16, at the accuracy of bfloat16 activations (what PyTorch's bfloat16
autocast gives). float32 and float16 weights are unaffected; where ft.kernels().matmul_bf16 is
nil, "bfloat16" computes as "float32". The environment variable FT_MATMUL_PRECISION sets the
value at start.]=] },
  { "ft.get_matmul_precision", [=[
ft.get_matmul_precision() -> "float32" or "bfloat16" (see ft.set_matmul_precision).]=] },
  { "ft.check_options", [=[
ft.check_options(where, opts, valid_names): opts (or {} for nil), after checking its keys.
An unknown key is an error naming where, the key, the valid names and the nearest one:
"ft.nn.Conv2d: unknown option 'paddding' (valid options: ...); did you mean 'padding'?".]=] },

  -- ---- autograd ----------------------------------------------------------------------------------
  { "ft.autograd.checkpoint", [=[
ft.autograd.checkpoint(fn, ...): runs fn(...) without keeping its intermediate results; its
float tensor results join the graph through one node whose backward reruns fn (grad mode on,
the forward's RNG state) and backpropagates through it: less memory for one more forward, the
same gradients. Tensors with a graph that fn uses must be passed as arguments.
Module:gradient_checkpointing_enable() applies it to a model's blocks.]=] },
  { "ft.autograd.is_recomputing", [=[
ft.autograd.is_recomputing() -> true while a checkpoint's backward reruns its fn, else false.
The first forward of ft.autograd.checkpoint sees false. Layers that update state in forward
(BatchNorm's running statistics) leave it alone while it is true, so it changes once a step.]=] },
  { "ft.no_grad", [=[
ft.no_grad(fn, ...): runs fn(...) without recording the graph and returns what fn returns.
The previous grad mode comes back even when fn raises an error.]=] },
  { "ft.enable_grad", [=[
ft.enable_grad(fn, ...): runs fn(...) with graph recording on (inside ft.no_grad) and returns its results.]=] },
  { "ft.is_grad_enabled", [=[
ft.is_grad_enabled(): true when ops record the graph for backward.]=] },
  { "ft.set_grad_enabled", [=[
ft.set_grad_enabled(flag): turns graph recording on or off (prefer ft.no_grad(fn), which restores it).]=] },
  { "ft.backward", [=[
ft.backward(t [, grad] [, {retain_graph = false}]) or t:backward(...): backpropagates from t.
Accumulates into the .grad of the leaves that require grad; grad may be left out for a one-element t.
The graph is freed unless retain_graph is true.]=] },

  -- ---- inspection -------------------------------------------------------------------------------------
  { "ft.Tensor:shape", [=[
t:shape(): the sizes as a table, {2, 3} for a 2x3 tensor ({} for a scalar).]=] },
  { "ft.Tensor:size", [=[
t:size([dim]): the size of dim (1-based, negative from the end), or the shape table without dim.]=] },
  { "ft.Tensor:stride", [=[
t:stride(dim): the stride of dim in elements (how far apart its neighbours are in storage).]=] },
  { "ft.Tensor:dim", [=[
t:dim(): the number of dims (0 for a scalar).]=] },
  { "ft.Tensor:numel", [=[
t:numel(): the number of elements.]=] },
  { "ft.Tensor:dtype", [=[
t:dtype(): the dtype's name: "float32", "int64", "bfloat16", "float16" or "float64".]=] },
  { "ft.Tensor:element_size", [=[
t:element_size(): the bytes of one element (4 for float32, 2 for bfloat16 and float16, 8 for int64 and float64).]=] },
  { "ft.Tensor:nbytes", [=[
t:nbytes(): the bytes t's elements take, t:numel() * t:element_size() (a view counts its own elements).]=] },
  { "ft.Tensor:item", [=[
t:item(): the value of a one-element tensor as a Lua number (an integer for int64; a half's exact value).]=] },
  { "ft.Tensor:totable", [=[
t:totable(): the values as nested Lua tables (a number for a scalar).]=] },
  { "ft.Tensor:is_contiguous", [=[
t:is_contiguous(): true when the elements are laid out densely in row-major order.]=] },

  -- ---- views and copies ------------------------------------------------------------------------------
  { "ft.Tensor:view", [=[
t:view(d1, d2, ...) or t:view({...}): the same storage with a new shape (one size may be -1).
t must be contiguous; t:reshape copies when it is not.]=] },
  { "ft.Tensor:reshape", [=[
t:reshape(d1, d2, ...) or t:reshape({...}): t with a new shape; a view when possible, else a copy.]=] },
  { "ft.Tensor:t", [=[
t:t(): the transpose of a 2-dim tensor (a view); a 1-dim tensor is returned as it is.]=] },
  { "ft.Tensor:transpose", [=[
t:transpose(dim1, dim2): a view with the two dims swapped.]=] },
  { "ft.Tensor:permute", [=[
t:permute(d1, d2, ...): a view with the dims in the given order (a permutation of 1..t:dim()).]=] },
  { "ft.Tensor:narrow", [=[
t:narrow(dim, start, length): a view of positions start .. start + length - 1 of dim (1-based).]=] },
  { "ft.Tensor:select", [=[
t:select(dim, i): the slice at position i of dim (1-based, negative from the end), one dim fewer.
t[i] is t:select(1, i).]=] },
  { "ft.Tensor:squeeze", [=[
t:squeeze([dim]): a view without dim (or without every dim) of size 1.]=] },
  { "ft.Tensor:unsqueeze", [=[
t:unsqueeze(dim): a view with a new dim of size 1 at dim.]=] },
  { "ft.Tensor:expand", [=[
t:expand(d1, d2, ...) or t:expand({...}): a broadcast view; sizes of 1 repeat, -1 keeps a size.]=] },
  { "ft.Tensor:contiguous", [=[
t:contiguous(): t itself when contiguous, else a dense copy.]=] },
  { "ft.Tensor:clone", [=[
t:clone(): a copy with its own storage (gradients flow back to t).]=] },
  { "ft.Tensor:detach", [=[
t:detach(): a view of the same storage outside the graph (no grad_fn, requires_grad false).]=] },
  { "ft.Tensor:to", [=[
t:to(dtype): t converted to dtype (any name t:dtype() gives, or "float", "long", "half", "double"); t
itself when it already has that dtype. To bfloat16 / float16 rounds to nearest, ties to even
(overflow to inf, NaN stays NaN); between float dtypes it is differentiable, the gradient being
the incoming one rounded to t's dtype.]=] },
  { "ft.Tensor:float", [=[
t:float(): t:to("float32").]=] },
  { "ft.Tensor:long", [=[
t:long(): t:to("int64") (values truncated toward zero).]=] },

  -- ---- in place -------------------------------------------------------------------------------------------
  { "ft.Tensor:fill_", [=[
t:fill_(value): sets every element to value, in place; returns t.]=] },
  { "ft.Tensor:zero_", [=[
t:zero_(): sets every element to 0, in place; returns t.]=] },
  { "ft.Tensor:copy_", [=[
t:copy_(src): copies src's values (broadcast to t's shape) into t, in place; returns t.]=] },
  { "ft.Tensor:uniform_", [=[
t:uniform_([low = 0, high = 1]): fills t with uniform samples in [low, high), in place; returns t.]=] },
  { "ft.Tensor:normal_", [=[
t:normal_([mean = 0, std = 1]): fills t with normal samples, in place; returns t.]=] },
  { "ft.Tensor:add_", [=[
t:add_(u [, alpha = 1]): t = t + alpha * u in place (u a tensor or a number); returns t.]=] },
  { "ft.Tensor:mul_", [=[
t:mul_(u): t = t * u in place (u a tensor or a number); returns t.]=] },
  { "ft.Tensor:requires_grad_", [=[
t:requires_grad_([flag = true]): sets t.requires_grad on a leaf of a float dtype; returns t.]=] },
  { "ft.Tensor:set_", [=[
t:set_(src): t shares src's storage, offset, strides and dtype from now on (no copy), as torch's
t.data = src; returns t. src must have t's shape; a float dtype may change into another (a
gradient of the old dtype is dropped); t must be a leaf (no grad_fn) and keeps requires_grad.
Converts weights in place (Module:to) and points a parameter at a tensor over a memory-mapped
file without copying it.]=] },

  -- ---- elementwise math ------------------------------------------------------------------------------------
  { "ft.Tensor:add", [=[
t:add(u) or t + u: the elementwise sum, broadcasting; u may be a number or a nested table.]=] },
  { "ft.Tensor:sub", [=[
t:sub(u) or t - u: the elementwise difference, broadcasting.]=] },
  { "ft.Tensor:mul", [=[
t:mul(u) or t * u: the elementwise product, broadcasting (t:matmul is the matrix product).]=] },
  { "ft.Tensor:div", [=[
t:div(u) or t / u: the elementwise quotient, broadcasting.]=] },
  { "ft.Tensor:pow", [=[
t:pow(p) or t ^ p: elementwise power; p a number or a tensor.]=] },
  { "ft.Tensor:neg", [=[
t:neg() or -t: the elementwise negation.]=] },
  { "ft.Tensor:exp", [=[
t:exp() or ft.exp(t): e^x elementwise.]=] },
  { "ft.Tensor:log", [=[
t:log() or ft.log(t): the natural logarithm elementwise.]=] },
  { "ft.Tensor:sqrt", [=[
t:sqrt() or ft.sqrt(t): the square root elementwise.]=] },
  { "ft.Tensor:abs", [=[
t:abs() or ft.abs(t): the absolute value elementwise.]=] },
  { "ft.Tensor:tanh", [=[
t:tanh() or ft.tanh(t): the hyperbolic tangent elementwise.]=] },
  { "ft.Tensor:sigmoid", [=[
t:sigmoid() or ft.sigmoid(t): 1 / (1 + e^-x) elementwise.]=] },
  { "ft.Tensor:relu", [=[
t:relu() or ft.relu(t): max(x, 0) elementwise.]=] },
  { "ft.Tensor:silu", [=[
t:silu() or ft.silu(t): x * sigmoid(x) elementwise (also F.silu).]=] },
  { "ft.silu_mul", [=[
ft.silu_mul(gate, up): silu(gate) * up in one pass, with broadcasting (also F.silu_mul); backward keeps only gate and up.]=] },
  { "ft.Tensor:gelu", [=[
t:gelu([approximate]): GELU, exact (erf, "none") or the "tanh" form; also t:gelu{approximate = "tanh"}.]=] },
  { "ft.Tensor:clamp", [=[
t:clamp([low] [, high]): values limited to [low, high]; nil leaves that side open.]=] },
  { "ft.Tensor:masked_fill", [=[
t:masked_fill(mask, value): t with value where mask (broadcast to t's shape) is non-zero.]=] },
  { "ft.where", [=[
ft.where(cond, a, b): a where cond is non-zero, else b, elementwise with broadcasting; a and b may be numbers.]=] },

  -- ---- comparisons ----------------------------------------------------------------------------------------
  { "ft.Tensor:eq", [=[
t:eq(u): 1 where t == u, else 0 (u a tensor or a number, broadcasting).]=] },
  { "ft.Tensor:ne", [=[
t:ne(u): 1 where t ~= u, else 0.]=] },
  { "ft.Tensor:lt", [=[
t:lt(u): 1 where t < u, else 0.]=] },
  { "ft.Tensor:le", [=[
t:le(u): 1 where t <= u, else 0.]=] },
  { "ft.Tensor:gt", [=[
t:gt(u): 1 where t > u, else 0.]=] },
  { "ft.Tensor:ge", [=[
t:ge(u): 1 where t >= u, else 0.]=] },

  -- ---- reductions ------------------------------------------------------------------------------------------
  { "ft.Tensor:sum", [=[
t:sum([dims [, keepdim]]): the sum of every element (a scalar), or over one dim or a list of dims.
dims: an integer or {1, 2}; keepdim (a boolean) keeps the reduced dims with size 1.]=] },
  { "ft.Tensor:mean", [=[
t:mean([dims [, keepdim]]): as t:sum, divided by the number of elements reduced.]=] },
  { "ft.Tensor:max", [=[
t:max([dim [, keepdim]]): the largest element (a scalar), or along dim: values, indices (1-based).]=] },
  { "ft.Tensor:min", [=[
t:min([dim [, keepdim]]): the smallest element, or along dim: values, indices (1-based).]=] },
  { "ft.Tensor:argmax", [=[
t:argmax([dim [, keepdim]]): the 1-based position of the largest element (of the flattened t
without dim), so class_names[t:argmax(2)[i]:item()] works directly.]=] },
  { "ft.Tensor:softmax", [=[
t:softmax(dim): exp(x) / sum(exp(x)) along dim (computed with the max subtracted).]=] },
  { "ft.Tensor:log_softmax", [=[
t:log_softmax(dim): log(softmax(x)) along dim, computed stably.]=] },

  -- ---- products, joining, indexing ---------------------------------------------------------------------------
  { "ft.Tensor:matmul", [=[
t:matmul(u) or ft.matmul(t, u): the matrix product (OpenBLAS), as torch.matmul.
1-dim operands are vectors; leading dims of 3+ dim operands are batch dims and broadcast.]=] },
  { "ft.Tensor:mm", [=[
t:mm(u): t:matmul(u).]=] },
  { "ft.Tensor:split", [=[
t:split(size [, dim = 1]): a list of views of size elements along dim (the last may be smaller).]=] },
  { "ft.Tensor:index_select", [=[
t:index_select(dim, index): the slices of dim at the 1-based positions of the int64 tensor index.]=] },
  { "ft.Tensor:index_add", [=[
t:index_add(dim, index, src): a copy of t with the slices of src added at the 1-based positions of
the int64 tensor index along dim (repeated positions accumulate); src has t's shape except #index
along dim. Differentiable in t and src.]=] },
  { "ft.Tensor:gather", [=[
t:gather(dim, index): the values of t at the 1-based positions index holds along dim (as torch.gather).]=] },
  { "ft.cat", [=[
ft.cat(tensors [, dim = 1]): the tensors of the list joined along dim; other sizes must agree.]=] },
  { "ft.stack", [=[
ft.stack(tensors [, dim = 1]): tensors of equal shape joined along a new dim.]=] },

  -- ---- files -------------------------------------------------------------------------------------------------
  { "ft.save", [=[
ft.save(path, tensors [, {metadata = {k = v}}]): writes an HDF5 checkpoint, atomically.
tensors: a flat or nested table of tensors; names are dotted paths ("layer1.0.conv1.weight",
stored as groups /layer1/0/conv1/weight). Each tensor is stored in its own dtype, bit for bit:
float32/float64 as IEEE floats, int64, float16 as IEEE binary16 (h5py reads numpy float16),
bfloat16 as a float type of its own layout (sign bit 15, 8 exponent bits at 7, bias 127,
7 mantissa bits; h5py reads it as float32 holding the same values). Metadata values (strings,
numbers) become attributes.]=] },
  { "ft.load", [=[
ft.load(path): reads an HDF5 checkpoint (ftlua's or h5py's): a flat table "a.b.c" -> tensor,
and its metadata table. Float datasets keep their dtype (IEEE float16/32/64 of either byte
order, and ft.save's bfloat16); a float of another layout is an error naming the dataset and
its layout; integers of 8 to 64 bits become int64. Every size is checked against the file
before anything is allocated.]=] },
  { "ft.image", [=[
ft.image: PNG images as C x H x W float32 tensors in [0, 1].]=] },
  { "ft.image.load", [=[
ft.image.load(path): a PNG as a C x H x W float32 tensor in [0, 1] (C = 1, 3 or 4).]=] },
  { "ft.image.save", [=[
ft.image.save(path, t): writes a C x H x W (or H x W) tensor of values in [0, 1] as a PNG.]=] },
  { "ft.safetensors", [=[
ft.safetensors: HuggingFace's safetensors files (model weights, PEFT adapters).]=] },
  { "ft.safetensors.load", [=[
ft.safetensors.load(path [, {names = {...}, dtype = "float32", mmap = false}]): a flat table
name -> tensor, and the metadata. F64/F32/F16/BF16 tensors come in their own dtype (float64,
float32, float16, bfloat16), bit for bit; dtype (a float dtype name) converts them while
reading, rounded to nearest even as PyTorch's .to(). Integer dtypes (I64 ... U8, BOOL) become
int64 whatever dtype says (values as stored: add 1 to 0-based ids; a U64 value past 2^63-1 is
an error). names: only those tensors are read. mmap = true maps the file copy-on-write:
tensors kept in their own dtype and aligned to their element size are views of the mapping
(no copy, no memory until touched; writing one changes only this process's copy, never the
file), the others are copied; the file stays mapped until the last such tensor is collected.
As with any mapping, a file truncated or rewritten in place by another process while mapped
shows in untouched pages, and touching a page past a truncated end kills the process
(SIGBUS); ft.save and ft.safetensors.save replace files by renaming, which is safe.]=] },
  { "ft.safetensors.save", [=[
ft.safetensors.save(path, tensors [, {metadata = {k = "v"}, dtype = ...}]): writes atomically,
each tensor in its own dtype (float32 F32, bfloat16 BF16, float16 F16, float64 F64, int64 I64).
dtype = "F32" | "F16" | "BF16" | "F64" (or float32, float16/half, bfloat16, float64/double)
converts every float tensor (int64 ones stay I64); dtype = {name = "BF16", ...} sets the dtype
of the named tensors. A dtype a tensor cannot take (an int64 tensor as BF16, a float one as
I64, I32, an unknown name) is an error naming the tensor and the dtype; nothing is written.]=] },
  { "ft.safetensors.info", [=[
ft.safetensors.info(path): the header only, {name = {dtype=, shape=, data_offsets=}}, and the metadata.]=] },
  { "ft.json", [=[
ft.json: JSON text to Lua values and back (config.json, adapter_config.json, tokenizer.json).
Objects become tables, arrays sequences, null the ft.json.null sentinel; integers stay exact.]=] },
  { "ft.json.decode", [=[
ft.json.decode(text): the Lua value of a JSON text; invalid JSON is an error naming where.]=] },
  { "ft.json.encode", [=[
ft.json.encode(value [, {indent = true | n}]): the JSON text of value (object keys sorted).]=] },
  { "ft.json.read", [=[
ft.json.read(path): ft.json.decode of the file's contents.]=] },
  { "ft.json.write", [=[
ft.json.write(path, value [, {indent = 2}]): writes value as indented JSON with a final newline, atomically.]=] },
  { "ft.json.array", [=[
ft.json.array([t]): t (or a new table) marked to encode as a JSON array even when empty.]=] },
}
