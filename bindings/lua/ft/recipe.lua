--- ft.recipe: what every recipe in scripts/ shares around its own work: checked command-line
-- flags, a folder per run, and the learning-curve chart.
--
--   local recipe = ft.recipe
--   local parser = argparse("my_recipe.lua", "What it does.")
--   parser:option("--epochs", "Epochs.", "5"):convert(recipe.integer{min = 1})
--   parser:option("--lr", "Learning rate.", "0.1"):convert(recipe.number{above = 0})
--   parser:option("--data-dir", "Images."):convert(recipe.dir)
--   local args = recipe.parse(parser)            -- a bad flag: one line on stderr, exit 2
--   if args.a > args.b then recipe.usage_error(parser, "--a must not exceed --b") end
--   local run = recipe.run(parser, args.out, {resume = args.resume})   -- runs/my_recipe/<time>
--   ... train, writing into run:path("results.json") ...
--   run:finish()                                  -- prints the folder again
--
-- Converters (for argparse's :convert) return the value, or nil and a message naming the
-- flag's value, which recipe.parse prints as "<recipe>: <message> (see --help)".
--
-- Under mpirun (ft.dist, several ranks) a recipe runs on every rank and prints once:
-- recipe.parse silences stdout on every rank but rank 0 (stderr stays, so any rank's error
-- shows); recipe.run makes the run's folder on rank 0 and gives every rank its name; the
-- batch flags mean the global batch (recipe.global_batch).
local ft = require "ft"

local recipe = {}

local function quote(s) return "'" .. tostring(s) .. "'" end

local function number_of(s)
  local v = tonumber(s)
  if v == nil or v ~= v then return nil end
  return v
end

--- recipe.integer{min =, max =} -> converter: an integer flag value within [min, max].
function recipe.integer(opts)
  opts = ft.check_options("ft.recipe.integer", opts, {"min", "max"})
  return function(s)
    local v = number_of(s)
    v = v and math.tointeger(v)
    if v == nil then return nil, ("expected an integer, got %s"):format(quote(s)) end
    if opts.min and v < opts.min then
      if opts.min == 1 then return nil, ("expected a positive integer, got %s"):format(quote(s)) end
      return nil, ("expected an integer >= %d, got %s"):format(opts.min, quote(s))
    end
    if opts.max and v > opts.max then
      return nil, ("expected an integer <= %d, got %s"):format(opts.max, quote(s))
    end
    return v
  end
end

--- recipe.number{min =, max =, above =, below =} -> converter: a finite number flag value;
-- min/max are inclusive bounds, above/below exclusive ones (number{above = 0} for a rate).
function recipe.number(opts)
  opts = ft.check_options("ft.recipe.number", opts, {"min", "max", "above", "below"})
  local bounds = {}
  if opts.min then bounds[#bounds + 1] = ">= " .. opts.min end
  if opts.above then bounds[#bounds + 1] = "> " .. opts.above end
  if opts.max then bounds[#bounds + 1] = "<= " .. opts.max end
  if opts.below then bounds[#bounds + 1] = "< " .. opts.below end
  local wanted = #bounds > 0 and ("a number " .. table.concat(bounds, " and ")) or "a finite number"
  return function(s)
    local v = number_of(s)
    if v == nil or v == math.huge or v == -math.huge then
      return nil, ("expected %s, got %s"):format(wanted, quote(s))
    end
    if (opts.min and v < opts.min) or (opts.max and v > opts.max) or (opts.above and v <= opts.above)
        or (opts.below and v >= opts.below) then
      return nil, ("expected %s, got %s"):format(wanted, quote(s))
    end
    return v
  end
end

--- recipe.file(s) -> s, or nil and a message when s is not a readable file (a converter).
function recipe.file(s)
  if ft.fs.is_dir(s) then return nil, ("%s is a folder, expected a file"):format(s) end
  if not ft.fs.exists(s) then return nil, ("%s: no such file"):format(s) end
  return s
end

--- recipe.dir(s) -> s, or nil and a message when s is not a folder that can be listed (a converter).
function recipe.dir(s)
  if not ft.fs.is_dir(s) then
    if ft.fs.exists(s) then return nil, ("%s is not a folder"):format(s) end
    return nil, ("%s: no such folder"):format(s)
  end
  return s
end

--- recipe.alphas(s) -> array of numbers in [0, 1] (a converter): a comma-separated list
-- ("0,0.5,1") or a range "start:stop:step" with 0 <= start <= stop <= 1 and step > 0.
function recipe.alphas(s)
  local out = {}
  local a, b, step = s:match("^([^:]+):([^:]+):([^:]+)$")
  if a then
    a, b, step = number_of(a), number_of(b), number_of(step)
    if not (a and b and step) then
      return nil, ("expected a range start:stop:step of numbers, got %s"):format(quote(s))
    end
    if not (step > 0) then return nil, ("the step of %s must be > 0"):format(quote(s)) end
    if a > b then return nil, ("the range %s runs backwards (start > stop)"):format(quote(s)) end
    local n = math.floor((b - a) / step + 1e-9)
    if n > 10000 then return nil, ("the range %s has %d values, more than 10000"):format(quote(s), n + 1) end
    for i = 0, n do out[#out + 1] = tonumber(("%.6g"):format(a + i * step)) end
  else
    for v in (s .. ","):gmatch("([^,]*),") do
      local x = number_of(v)
      if x == nil then return nil, ("%s is not a number (in %s)"):format(quote(v), quote(s)) end
      out[#out + 1] = x
    end
  end
  for _, x in ipairs(out) do
    if not (x >= 0 and x <= 1) then
      return nil, ("alphas must lie in [0, 1], got %g (in %s)"):format(x, quote(s))
    end
  end
  return out
end

-- ---- parsing --------------------------------------------------------------------------------

local function program_name(parser)
  return parser._name or (arg and arg[0] and arg[0]:match("([^/]*)$")) or "recipe"
end

--- recipe.usage_error(parser, fmt, ...): prints "<recipe>: <message> (see --help)" on one
-- line on stderr and exits with status 2 (a bad command line).
function recipe.usage_error(parser, fmt, ...)
  local msg = select("#", ...) > 0 and fmt:format(...) or fmt
  msg = tostring(msg):gsub("\n+", "; ")
  io.stderr:write(("%s: %s (see --help)\n"):format(program_name(parser), msg))
  os.exit(2)
end

--- recipe.fail(parser, fmt, ...): prints "<recipe>: <message>" on one line on stderr and exits
-- with status 1 (a failure once the command line was accepted: a file that does not load ...).
-- The folder of the current run (recipe.run) is removed when it is still empty.
function recipe.fail(parser, fmt, ...)
  local msg = select("#", ...) > 0 and fmt:format(...) or fmt
  msg = tostring(msg):gsub("^[^:\n]*%.lua:%d+: ", ""):gsub("\n+", "; ")
  io.stderr:write(("%s: %s\n"):format(program_name(parser), msg))
  -- A run that failed before writing anything leaves no empty folder behind (rmdir removes
  -- only an empty one).
  if recipe.current_run and ft.dist.is_main() then
    os.execute("rmdir '" .. recipe.current_run.dir:gsub("'", "'\\''") .. "' 2>/dev/null")
  end
  os.exit(1)
end

-- Each option's converter, wrapped so that a refused value names its flag ("--epochs:
-- expected a positive integer, got '0'"): argparse reports a converter's message as is.
local function name_refusals(parser)
  for _, opt in ipairs(parser._options or {}) do
    local convert, flag = opt._convert, opt._name
    if type(convert) == "function" and flag and not opt._ft_named then
      opt._convert = function(s)
        local v, err = convert(s)
        if v == nil then return nil, ("%s: %s"):format(flag, err or ("malformed value " .. quote(s))) end
        return v, err
      end
      opt._ft_named = true
    end
  end
end

-- Every way a rank other than the main one would print on stdout, made a no-op: print,
-- io.write and io.stdout (a handle on /dev/null, also the default output).
local function silence_stdout()
  print = function() end
  local null = io.open("/dev/null", "w")
  if null then
    io.stdout = null
    io.output(null)
  end
  io.write = function() return io.stdout end
end

--- recipe.parse(parser [, argv]) -> args: parses the command line (default: the script's arg);
-- an unknown flag, a missing value or a value a converter refuses ends the process with one
-- line naming the flag and exit status 2. --help prints the usage and exits 0. Under mpirun
-- with several ranks it first silences stdout on every rank but the main one (print,
-- io.write and io.stdout write nothing there; stderr stays), so the run prints once, and
-- checks that every rank got the same options (else rank 0 names the first that differs and
-- every rank exits with status 2).
function recipe.parse(parser, argv)
  if ft.dist.world_size() > 1 and not ft.dist.is_main() then silence_stdout() end
  name_refusals(parser)
  local ok, args = parser:pparse(argv)
  if not ok then recipe.usage_error(parser, "%s", tostring(args)) end
  if ft.dist.world_size() > 1 then -- every rank must run the same command
    local same, err = pcall(ft.dist.check_same, "the command-line options", args)
    if not same then
      if not ft.dist.is_main() then os.exit(2) end
      recipe.usage_error(parser, "%s", tostring(err):gsub("^.-ft%.dist: ", ""))
    end
  end
  return args
end

-- ---- run folders ----------------------------------------------------------------------------

local Run = {}
Run.__index = Run

local function timestamp() return os.date("%Y%m%d-%H%M%S") end

-- mkdir without -p: fails when the folder exists, so two runs never get the same one.
local function mkdir_new(dir)
  local ok = os.execute("mkdir '" .. dir:gsub("'", "'\\''") .. "' 2>/dev/null")
  return ok == true or ok == 0
end

local function is_empty_dir(dir)
  local ok, entries = pcall(ft._listdir, dir)
  return ok and next(entries) == nil
end

-- The run folders under root, oldest first: <timestamp> and <timestamp>-<version>.
local function run_folders(root)
  local ok, entries = pcall(ft._listdir, root)
  if not ok then return {} end
  local list = {}
  for name, kind in pairs(entries) do
    local stamp, version = name:match("^(%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d)%-?(%d*)$")
    if stamp and kind == "directory" then
      list[#list + 1] = {name = name, stamp = stamp, version = tonumber(version) or 1}
    end
  end
  table.sort(list, function(a, b)
    if a.stamp ~= b.stamp then return a.stamp < b.stamp end
    return a.version < b.version
  end)
  return list
end

-- The run's folder: made (or, resuming, found) now. Returns dir, or nil, the kind of
-- failure ("usage" or "fail") and its message.
local function make_folder(out, opts, prog, root)
  if out then
    if ft.fs.exists(out) and not ft.fs.is_dir(out) then
      return nil, "usage", ("--out %s is a file; --out names the run's folder"):format(out)
    end
    if ft.fs.is_dir(out) and not opts.resume and not is_empty_dir(out) then
      return nil, "usage", ("--out %s already holds another run's files; choose a new folder "
        .. "(or continue that run with --resume)"):format(out)
    end
    local ok, err = pcall(ft.fs.mkdir, out, prog)
    if not ok then return nil, "fail", tostring(err) end
    return out
  elseif opts.resume then
    local list = run_folders(root)
    if #list == 0 then
      return nil, "usage", ("--resume: no earlier run under %s/; pass --out with the run's folder"):format(root)
    end
    return root .. "/" .. list[#list].name
  end
  local ok, err = pcall(ft.fs.mkdir, root, prog)
  if not ok then return nil, "fail", tostring(err) end
  local stamp = timestamp()
  local dir = root .. "/" .. stamp
  local version = 1
  while not mkdir_new(dir) do
    version = version + 1
    if version > 1000 then return nil, "fail", ("cannot create a new run folder under %s"):format(root) end
    dir = ("%s/%s-%d"):format(root, stamp, version)
  end
  return dir
end

--- recipe.run(parser, out [, {resume = false, root = "runs", name = <recipe>}]) -> run
-- The run's own folder, created now and printed: out when given (it must be new or empty,
-- unless resuming: one run never overwrites another), else runs/<name>/<YYYYmmdd-HHMMSS>, with
-- -2, -3 ... when that second's folder exists (name may hold a slash: "self_train/text"). With resume and no out: the newest folder
-- under runs/<name>/ (an error when there is none). run.dir is the folder, run:path(file) a
-- file in it, run:finish([what]) prints the folder and the time taken. Under mpirun rank 0
-- makes (or finds) the folder and every rank gets its name, once it exists; when rank 0
-- cannot, every rank ends (rank 0 prints why).
function recipe.run(parser, out, opts)
  opts = ft.check_options("ft.recipe.run", opts, {"resume", "root", "name"})
  local prog = program_name(parser)
  local name = opts.name or prog:gsub("%.lua$", "")
  local root = (opts.root or "runs") .. "/" .. name
  local dir, kind, msg
  if ft.dist.world_size() == 1 then
    dir, kind, msg = make_folder(out, opts, prog, root)
  else
    local made = {}
    if ft.dist.is_main() then made.dir, made.kind, made.msg = make_folder(out, opts, prog, root) end
    -- Sent once rank 0 made the folder: no rank goes on before it exists.
    made = ft.dist.broadcast_value(made, 0)
    dir, kind, msg = made.dir, made.kind, made.msg
    if kind and not ft.dist.is_main() then os.exit(kind == "usage" and 2 or 1) end
  end
  if kind == "usage" then recipe.usage_error(parser, "%s", msg) end
  if kind == "fail" then recipe.fail(parser, "%s", msg) end
  local run = setmetatable({dir = dir, name = name, program = prog, started = ft.clock(),
    resumed = opts.resume or false}, Run)
  ft.progress.log("%s: %s run folder %s", prog, opts.resume and "continuing the" or "writing to", dir)
  recipe.current_run = run
  return run
end

--- run:path(file) -> "<run folder>/<file>".
function Run:path(file) return self.dir .. "/" .. file end

--- run:finish([files]) prints "<recipe>: wrote <files> in <folder> (<time>)" (once: on the main rank).
function Run:finish(files)
  ft.progress.log("%s: wrote %sin %s (%s in all)", self.program, files and (files .. " ") or "", self.dir,
    ft.progress.hms(ft.clock() - self.started))
end

--- recipe.global_batch(batch_size, per_rank_batch [, {default =, world_size =, parser =,
-- flag = "--batch-size", per_rank_flag = "--per-rank-batch", uneven = false}]) -> the global
-- batch size: the batch flag's value (the global batch, which must divide among the ranks, or
-- with uneven = true hold at least one row per rank: a recipe whose ranks take ft.dist.shard's
-- uneven shares and weigh their losses with ddp:global_mean), or per_rank_batch times the world
-- size (ft.dist.world_size(), or world_size); default when neither is given. Giving both,
-- neither (without default), or a batch that does not divide is an error naming the flags; with
-- parser it is recipe.usage_error's one line and exit status 2 instead.
function recipe.global_batch(batch_size, per_rank_batch, opts)
  local WHERE = "ft.recipe.global_batch"
  opts = ft.check_options(WHERE, opts, {"default", "world_size", "parser", "flag", "per_rank_flag", "uneven"})
  local check = ft.check
  check.integer(WHERE, "batch_size", batch_size, nil, {min = 1})
  check.integer(WHERE, "per_rank_batch", per_rank_batch, nil, {min = 1})
  check.integer(WHERE, "default", opts.default, nil, {min = 1})
  check.integer(WHERE, "world_size", opts.world_size, nil, {min = 1})
  local flag = check.string(WHERE, "flag", opts.flag, "--batch-size")
  local per_rank_flag = check.string(WHERE, "per_rank_flag", opts.per_rank_flag, "--per-rank-batch")
  local uneven = check.boolean(WHERE, "uneven", opts.uneven, false)
  local function refuse(fmt, ...)
    if opts.parser then recipe.usage_error(opts.parser, fmt, ...) end
    error((WHERE .. ": " .. fmt):format(...), 3)
  end
  if batch_size and per_rank_batch then
    refuse("%s and %s both set the batch: give one of them", flag, per_rank_flag)
  end
  local world = opts.world_size or ft.dist.world_size()
  if per_rank_batch then return per_rank_batch * world end
  batch_size = batch_size or opts.default
  if not batch_size then refuse("give %s (the global batch) or %s", flag, per_rank_flag) end
  if uneven and batch_size < world then
    refuse("%s %d (the global batch) leaves some of the %d ranks no row; give at least %d, or %s", flag, batch_size,
      world, world, per_rank_flag)
  elseif not uneven and batch_size % world ~= 0 then
    refuse("%s %d (the global batch) does not divide among %d ranks; give a multiple of %d, or %s",
      flag, batch_size, world, world, per_rank_flag)
  end
  return batch_size
end

--- recipe.model_path(file) -> the path of a shipped checkpoint (models/<file>), found from the
-- running script's folder (scripts/../models), so a recipe runs from any working directory,
-- in the source tree and in the install tree alike.
function recipe.model_path(file)
  local script = arg and arg[0] or ""
  local dir = script:match("^(.*)/[^/]*$") or "."
  return dir .. "/../models/" .. file
end

-- ---- learning curves ------------------------------------------------------------------------

--- recipe.read_jsonl(path) -> array of the JSON objects on path's lines (an ft.train.Logger file).
function recipe.read_jsonl(path)
  local f, err = io.open(path, "rb")
  if not f then error("ft.recipe.read_jsonl: cannot read " .. tostring(err), 2) end
  local out = {}
  for line in f:lines() do
    if line:find("%S") then out[#out + 1] = ft.json.decode(line) end
  end
  f:close()
  return out
end

--- recipe.series(records, key [, {scale = 1, name =, every =}]) -> a line-chart series
-- {name =, x = steps, y = values}: the records (ft.train.Logger lines) that hold key, with
-- value * scale. every = n averages the training records in consecutive groups of n steps
-- (a readable loss curve from per-step losses). nil when no record holds key.
function recipe.series(records, key, opts)
  opts = ft.check_options("ft.recipe.series", opts, {"scale", "name", "every"})
  local scale, every = opts.scale or 1, opts.every or 1
  local x, y = {}, {}
  local sum, n, last_step = 0, 0, nil
  for _, r in ipairs(records) do
    local v = r[key]
    if type(v) == "number" and r.step then
      sum, n, last_step = sum + v, n + 1, r.step
      if n >= every then
        x[#x + 1], y[#y + 1] = last_step, scale * sum / n
        sum, n = 0, 0
      end
    end
  end
  if n > 0 then x[#x + 1], y[#y + 1] = last_step, scale * sum / n end
  if #x == 0 then return nil end
  return {name = opts.name or key, x = x, y = y}
end

--- recipe.curve(path, {title =, xlabel = "step", ylabel =, series = {...}, legend =}) -> layout
-- or nil: the learning-curve PNG (ft.plot.line) of the series that have points; nil (nothing
-- written) when none has.
function recipe.curve(path, opts)
  opts = ft.check_options("ft.recipe.curve", opts, {"title", "xlabel", "ylabel", "series", "legend", "ylim"})
  local series = {}
  for _, s in pairs(opts.series or {}) do
    if s and #s.x > 0 then series[#series + 1] = s end
  end
  if #series == 0 then return nil end
  return ft.plot.line({path = path, title = opts.title, xlabel = opts.xlabel or "step", ylabel = opts.ylabel,
    series = series, legend = opts.legend, ylim = opts.ylim, width = 800, height = 480})
end

--- recipe.wise_plot(path, rows, chosen [, {title =}]) -> layout: the WiSE-FT curve, test ID
-- and OOD accuracy (rows[i] = {alpha =, id =, ood =}, fractions) against alpha, with the
-- alpha chosen on validation (the row `chosen`) marked in black on both curves, its
-- accuracies in the legend.
function recipe.wise_plot(path, rows, chosen, opts)
  opts = ft.check_options("ft.recipe.wise_plot", opts, {"title"})
  local xs, id, ood = {}, {}, {}
  for i, r in ipairs(rows) do xs[i], id[i], ood[i] = r.alpha, 100 * r.id, 100 * r.ood end
  return ft.plot.line({path = path, title = opts.title, xlabel = "alpha (0 = linear probe, 1 = fine-tuned)",
    ylabel = "test accuracy (%)", legend = "outside", width = 800, height = 420,
    series = {{name = "ID (clean)", x = xs, y = id}, {name = "OOD (corrupted)", x = xs, y = ood},
      {name = ("chosen alpha %g (ID %.1f, OOD %.1f)"):format(chosen.alpha, 100 * chosen.id, 100 * chosen.ood),
        x = {chosen.alpha}, y = {100 * chosen.id}, color = "#000000"},
      {x = {chosen.alpha}, y = {100 * chosen.ood}, color = "#000000"}}})
end

-- Prints each bar's value above it on the chart's image (for an ft.plot without value labels):
-- the layout's bar rectangles say where.
local function label_bars(layout, values, fmt)
  local canvas = require "ft.plot.canvas"
  local img = layout.image
  local H, W = img:size(2), img:size(3)
  local c = setmetatable({w = W, h = H, plane = W * H, px = img:reshape(-1):totable(), clip = {1, 1, W, H}},
    getmetatable(canvas.new(1, 1)))
  local th = canvas.text_height(1)
  for k, bars in pairs(layout.bars) do
    for i, r in pairs(bars) do
      local text = fmt:format(values[k][i])
      local w = canvas.text_width(text, 1)
      local x = math.floor((r.left + r.right) / 2 - w / 2 + 0.5)
      local y = r.top - th - 2
      if y < layout.plot.top + 1 then y = r.top + 2 end   -- no room above: inside the bar's top
      c:text(text, x, y, {0.1, 0.1, 0.1}, 1)
    end
  end
  return ft.tensor(c.px):reshape{3, H, W}
end

--- recipe.bars(path, opts) -> layout: a comparison bar chart (ft.plot.bar's options) with
-- each bar's value printed above it ("%.1f").
function recipe.bars(path, opts)
  local o = {path = path, value_labels = "%.1f"}
  for k, v in pairs(opts) do o[k] = v end
  local ok, layout = pcall(ft.plot.bar, o)
  if ok then return layout end
  if not tostring(layout):find("value_labels", 1, true) then error(layout, 0) end
  -- This ft.plot has no value labels: draw the chart, then the values on its image.
  o.value_labels, o.path = nil, nil
  layout = ft.plot.bar(o)
  local values = {}
  for k, sr in ipairs(o.series) do values[k] = sr.values end
  layout.image = label_bars(layout, values, "%.1f")
  if path then ft.image.save(path, layout.image) end
  return layout
end

--- recipe.bar_limits(values [, pad]) -> {lo, hi}: a y-range for comparison bars that shows
-- their differences: from a little below the smallest finite value to a little above the
-- largest (not from 0 when the values are, say, 85-93), clamped to [0, 100] for percentages.
function recipe.bar_limits(values, pad)
  local lo, hi = math.huge, -math.huge
  for _, v in pairs(values) do
    if type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge then
      lo, hi = math.min(lo, v), math.max(hi, v)
    end
  end
  if lo > hi then return {0, 1} end
  local span = math.max(hi - lo, 1)
  pad = pad or 0.25
  local a, b = lo - pad * span, hi + pad * span
  if lo >= 0 then a = math.max(0, a) end
  if hi <= 100 and lo >= 0 then b = math.min(100, b) end
  return {math.floor(a), math.ceil(b)}
end

return recipe
