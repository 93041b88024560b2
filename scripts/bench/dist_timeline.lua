-- Draws the timeline of one data-parallel step from scripts/bench/dist_step.lua's --json: for
-- each overlapping mode, rank 0's backward pass as one bar and each gradient bucket's
-- all-reduce (started .. done, seconds since the forward began) as a bar of its own, so that
-- what overlaps backward, and what is left after it (the exposed wait), shows.
--
--   ftlua scripts/bench/dist_timeline.lua overlap.json timeline.png
local ft = require "ft"
local argparse = require "argparse"

local parser = argparse("dist_timeline.lua", "Draw one data-parallel step's timeline from dist_step.lua's --json.")
parser:argument("results", "The JSON dist_step.lua wrote."):convert(ft.recipe.file)
parser:argument("png", "The PNG to write.")
local args = ft.recipe.parse(parser)
local path, png = args.results, args.png
local results = ft.json.read(path)

local series, row = {}, 0
local function bar(name, from, to, color)
  series[#series + 1] = { name = name, x = { from, to }, y = { row, row }, color = color }
end
for _, mode in ipairs(results.modes) do
  local tl = mode.ranks and mode.ranks[1] and mode.ranks[1].timeline
  if mode.overlap and tl then
    row = row + 1
    bar(row == 1 and "backward (rank 0)" or nil, tl.backward_start, tl.backward_end, "#4477aa")
    for i, b in ipairs(tl.buckets) do
      row = row + 1
      bar(row == 2 and i == 1 and "bucket all-reduce" or nil, b.started, math.max(b.done, b.started + 1e-4), "#ee6677")
    end
    row = row + 1 -- a gap between modes
  end
end
if #series == 0 then
  io.stderr:write(path .. ": no overlapping mode with a timeline\n")
  os.exit(1)
end
ft.plot.line({ path = png, width = 900, height = 520, series = series, legend = "lower right",
  title = ("%s, %d ranks: backward and the gradient buckets' all-reduces of one step"):format(results.model,
    results.ranks),
  xlabel = "seconds since the forward began", ylabel = "backward, then buckets in start order" })
print("wrote " .. png)
