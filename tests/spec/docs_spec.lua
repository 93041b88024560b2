-- docs/API.md is generated from the doc comments by docs/gen_api.lua: every public function,
-- class and module has a doc comment, and the committed file is what the generator writes.
-- On failure the generator's list says which ones lack a comment (file:line name).
local ftlua = os.getenv("FTLUA") or "build/ftlua"
-- absolute: a test below runs the generator from a temporary folder
if ftlua:sub(1, 1) ~= "/" and os.getenv("PWD") then ftlua = os.getenv("PWD") .. "/" .. ftlua end
local source = os.getenv("FT_SOURCE_DIR") or "."

local function run(args)
  local cmd = ("cd '%s' && '%s' docs/gen_api.lua %s 2>&1"):format(source, ftlua, args)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok and 0 or code, out
end

describe("docs/API.md", function()
  it("is current and every public function, class and module has a doc comment", function()
    local code, out = run("--check")
    assert(code == 0, "docs/gen_api.lua --check failed (regenerate with: build/ftlua docs/gen_api.lua):\n" .. out)
  end)

  it("covers every module under bindings/lua/ft and the C module's functions", function()
    local f = assert(io.open(source .. "/docs/API.md"))
    local text = f:read("a")
    f:close()
    local p = assert(io.popen("cd '" .. source .. "/bindings/lua' && find ft -name '*.lua' | sort"))
    for file in p:lines() do
      local name = file:gsub("%.lua$", ""):gsub("/", ".")
      if name ~= "ft.help.builtins" and name ~= "ft.tensor" then
        assert(text:find("\n## " .. name .. "\n", 1, true), "docs/API.md has no section for " .. name)
      end
    end
    p:close()
    for _, name in ipairs({ "ft.zeros", "ft.Tensor:matmul", "ft.image.load", "ft.safetensors.save", "ft.json.decode" }) do
      assert(text:find("### `" .. name .. "`", 1, true), "docs/API.md does not document " .. name)
    end
  end)

  it("the generator finds a missing doc comment and names its file and line", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute(("mkdir -p '%s/docs' '%s/bindings/lua/ft' && cp '%s/docs/gen_api.lua' '%s/docs/' && cp -r '%s/bindings/lua/ft/help' '%s/bindings/lua/ft/help' && cp '%s/bindings/lua/ft/help.lua' '%s/bindings/lua/ft/'")
      :format(dir, dir, source, dir, source, dir, source, dir)))
    local f = assert(io.open(dir .. "/bindings/lua/ft/zz_undocumented.lua", "w"))
    f:write("-- ft.zz_undocumented: a module with one undocumented function.\nlocal M = {}\n\nfunction M.lonely() end\n\nreturn M\n")
    f:close()
    local p = assert(io.popen(("cd '%s' && '%s' docs/gen_api.lua --out '%s/API.md' 2>&1"):format(dir, ftlua, dir)))
    local out = p:read("a")
    local ok = p:close()
    os.execute("rm -rf '" .. dir .. "'")
    assert.is_falsy(ok)
    assert(out:find("bindings/lua/ft/zz_undocumented.lua:4 ft.zz_undocumented.lonely", 1, true), out)
  end)
end)
