-- luarocks build of ftlua from a checkout: `luarocks --lua-version 5.4 make` in its top folder.
-- The CMake build installs what `cmake --install` does, into the rock's folders: the C module
-- (ft.so) and the Lua half (ft/*.lua) are deployed to the tree's lib/lua/5.4 and
-- share/lua/5.4, ftlua to its bin/; the checkpoints and recipes stay in the rock's
-- share/ftlua/{models,scripts} (`luarocks show ftlua` tells where), so that a recipe finds its
-- default checkpoint as <scripts>/../models. Debian build dependencies: see the Makefile's
-- PACKAGES (OpenBLAS, HDF5, libpng, zlib, readline, cJSON, Oniguruma, utf8proc, Lua 5.4 headers, cmake).
rockspec_format = "3.0"
package = "ftlua"
version = "scm-1"
source = {
  url = "git+file://.",
}
description = {
  summary = "A fine-tuning runtime: tensors, autograd, layers, optimizers and PEFT in C, exposed to Lua 5.4",
  detailed = [[
ftlua loads pretrained models (ResNets, ViT, GPT-2, the Llama family), freezes what should not
train, attaches LoRA, (IA)3, ReFT or prompt-tuning adapters, trains with supervised or
self-training loops and saves HDF5 or safetensors checkpoints. `require "ft"` from any Lua 5.4,
or the ftlua runner and REPL.]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    FT_INSTALL_BINDIR = "$(BINDIR)",
    FT_INSTALL_CMODDIR = "$(LIBDIR)",
    FT_INSTALL_LUADIR = "$(LUADIR)",
    FT_INSTALL_DATADIR = "$(PREFIX)/share/ftlua",
    -- where the deployed ftlua (<tree>/bin) finds the deployed Lua half (<tree>/share/lua/5.4)
    FT_INSTALLED_LUA_DIR = "../share/lua/5.4",
    FT_BUILD_TESTS = "OFF",
  },
}
