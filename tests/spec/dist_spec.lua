-- ft.dist outside mpirun: a world of one process, in which every collective returns its input's
-- values and DataParallel trains exactly as the bare model does. (Several ranks: tests/dist/,
-- run under mpirun by tests/sh/dist_*.sh.)
local ft = require "ft"
local H = require "helpers"

local function tiny_gpt(seed)
  ft.manual_seed(seed)
  return ft.models.new("gpt-s", {n_layer = 1, n_embd = 16, n_head = 2, n_positions = 16, vocab_size = 32})
end

describe("ft.dist in a world of one", function()
  it("is rank 0 of 1, the main rank", function()
    assert.are.equal(ft.dist, ft.dist.init())
    assert.are.equal(0, ft.dist.rank())
    assert.are.equal(1, ft.dist.world_size())
    assert.are.equal(0, ft.dist.local_rank())
    assert.is_true(ft.dist.is_main())
    ft.dist.barrier()
  end)

  it("returns the input's values from every collective", function()
    local t = ft.tensor({{1, 2}, {3, 4}})
    for _, op in ipairs{"sum", "avg", "max", "min"} do
      assert.are.same({{1, 2}, {3, 4}}, ft.dist.all_reduce(t, {op = op}):totable())
    end
    assert.are.same({{1, 2}, {3, 4}}, ft.dist.broadcast(t):totable())
    local g = ft.dist.all_gather(t)
    assert.are.same({{1, 2}, {3, 4}}, g:totable())
    g[1][1] = 9
    assert.are.equal(1, t[1][1]:item(), "all_gather returns a copy")
    assert.are.same({5}, ft.dist.all_gather(ft.tensor(5)):totable())
    assert.are.same({{1, 2}, {3, 4}}, ft.dist.reduce_scatter(t):totable())
    assert.are.same({a = {1, 2}}, ft.dist.broadcast_value({a = {1, 2}}))
    local batch = {x = t, name = "b"}
    local part, rows = ft.dist.shard(batch)
    assert.are.equal(batch, part)
    assert.are.equal(2, rows)
    ft.dist.check_same("anything", {x = 1})
    local x = ft.tensor({1, 2}, {requires_grad = true})
    local y = ft.dist.sum_across(x)
    y:sum():backward()
    assert.are.same({1, 2}, y:totable())
    assert.are.same({1, 1}, x.grad:totable())
  end)

  it("names what is wrong with a collective's arguments", function()
    H.assert_mentions(H.error_of(function() ft.dist.all_reduce({1, 2}) end), "ft.dist.all_reduce: expected a tensor")
    H.assert_mentions(H.error_of(function() ft.dist.all_reduce(ft.zeros(2), {op = "mean"}) end), "op must be 'sum', 'avg', 'max' or 'min', got 'mean'")
    H.assert_mentions(H.error_of(function() ft.dist.all_reduce(ft.zeros(2), {opp = "sum"}) end), "unknown option 'opp'")
    H.assert_mentions(H.error_of(function() ft.dist.all_reduce(ft.zeros(3, 2):t()) end), "must be contiguous")
    H.assert_mentions(H.error_of(function() ft.dist.all_reduce(ft.zeros(2, {dtype = "int64"}), {op = "avg"}) end), "op 'avg' needs a float tensor")
    H.assert_mentions(H.error_of(function() ft.dist.all_reduce(ft.zeros(2):to("float16")) end), "float16 tensors cannot be reduced")
    H.assert_mentions(H.error_of(function() ft.dist.broadcast(ft.zeros(2), 1) end), "root 1 is not a rank of this world")
    H.assert_mentions(H.error_of(function() ft.dist.reduce_scatter(ft.tensor(1)) end), "must divide by the world size")
  end)
end)

describe("ft.dist.DataParallel in a world of one", function()
  it("trains exactly as the bare model", function()
    ft.manual_seed(3)
    local batches = {}
    for s = 1, 3 do batches[s] = ft.randint(1, 32, {2, 9}) end
    local function run(wrap)
      local model = tiny_gpt(11)
      local net = wrap and ft.dist.DataParallel(model) or model
      local opt = ft.optim.AdamW(model:parameters(), {lr = 1e-2})
      for s = 1, 3 do
        local ids = batches[s]
        local out = net(ids:narrow(2, 1, 8))
        local logits = out.logits or out
        local loss = ft.nn.functional.cross_entropy(logits:reshape(-1, 32), ids:narrow(2, 2, 8):reshape(-1))
        loss:backward()
        opt:step()
        opt:zero_grad()
      end
      return model
    end
    local a, b = run(false), run(true)
    assert.are.equal(0, H.max_param_diff(H.param_values(a), H.param_values(b)))
  end)

  it("is the model for everything else", function()
    local model = tiny_gpt(1)
    local ddp = ft.dist.DataParallel(model)
    assert.are.equal(model, ddp.module)
    assert.are.equal(#model:parameters(), #ddp:parameters())
    ddp:eval()
    assert.is_false(model.training)
    local a, b = model:state_dict(), ddp:state_dict()
    for k, t in pairs(a) do assert.is_true(b[k] ~= nil and b[k]:eq(t):sum():item() == t:numel(), k) end
    assert.is_nil(ddp:timeline())
    ddp.custom_setting = 7
    assert.are.equal(7, rawget(model, "custom_setting"))
    assert.are.equal(7, ddp:no_sync(function(a, b) return a + b end, 3, 4))
    assert.matches("^ft.dist.DataParallel%(", tostring(ddp))
  end)

  it("refuses what it cannot wrap", function()
    H.assert_mentions(H.error_of(function() ft.dist.DataParallel({}) end), "expected an ft.nn.Module")
    H.assert_mentions(H.error_of(function() ft.dist.DataParallel(tiny_gpt(1), {bucket = 1}) end), "unknown option 'bucket' (valid options: broadcast, bucket_mb, overlap)")
    H.assert_mentions(H.error_of(function() ft.dist.DataParallel(tiny_gpt(1), {bucket_mb = -1}) end), "bucket_mb must be a finite number > 0")
    H.assert_mentions(H.error_of(function() ft.dist.DataParallel(tiny_gpt(1)):no_sync(5) end), "fn")
  end)
end)
