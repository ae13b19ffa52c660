--[[
log.lua: one line per query, the way operators have logged with mysql-proxy since 2008.

    LOG_FILE=/var/log/mysql-queries.log mysql-proxy --proxy-lua-script=log.lua

Each COM_QUERY is appended to LOG_FILE (default: mysql-proxy-queries.log in the current
directory) as

    2026-11-29 10:04:49 42 -- SELECT * FROM t WHERE id = 1

date and time, the server's thread id, and the query as the client sent it (with the
password of IDENTIFIED BY, SET PASSWORD and PASSWORD() replaced by '<redacted>').
Lines are flushed at most once a second and when the client disconnects. Nothing else
is touched: read_query returns nothing, so every query goes to the server unchanged and
its result streams back without being buffered.

Written for mysqlproxy; it behaves like the classic log.lua (not copied from it).
--]]

local log_path = os.getenv("LOG_FILE") or "mysql-proxy-queries.log"

-- The script body runs once per connection, so each connection opens the file once.
-- A file that cannot be opened is reported once and the queries still pass.
local log_file, open_error = io.open(log_path, "a")
if not log_file then
	io.stderr:write("log.lua: cannot open " .. log_path .. ": " .. tostring(open_error) .. "\n")
else
	-- Buffered, and flushed at most once a second and when the client leaves: a
	-- flush per query is a system call per query, on the proxy's only thread.
	log_file:setvbuf("full")
end

-- Passwords in IDENTIFIED BY / PASSWORD('...') clauses are not written down.
local function redact(query)
	local upper = query:upper()
	if not (upper:find("PASSWORD", 1, true) or upper:find("IDENTIFIED", 1, true)) then
		return query
	end
	local identified = "[Ii][Dd][Ee][Nn][Tt][Ii][Ff][Ii][Ee][Dd]%s+"
	local by = "[Bb][Yy]%s+"
	query = query:gsub("(" .. identified .. by .. ")(['\"]).-%2", "%1'<redacted>'")
	query = query:gsub("(" .. identified .. "[Ww][Ii][Tt][Hh]%s+[%w_']+%s+" .. by .. ")(['\"]).-%2",
		"%1'<redacted>'")
	query = query:gsub("([Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]%s*%(%s*)(['\"]).-%2", "%1'<redacted>'")
	query = query:gsub("([Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]%s*=%s*)(['\"]).-%2", "%1'<redacted>'")
	return query
end

local stamp_second, stamp = -1, ""
local flushed_second = os.time()

function read_query(packet)
	if log_file == nil or packet:byte() ~= proxy.COM_QUERY then
		return
	end
	local now = os.time()
	if now ~= stamp_second then  -- os.date once a second, not once a query
		stamp_second, stamp = now, os.date("%Y-%m-%d %H:%M:%S", now)
	end
	local server = proxy.connection.server
	log_file:write(stamp, " ", server and server.thread_id or 0, " -- ",
		redact(packet:sub(2)), "\n")
	if now ~= flushed_second then
		flushed_second = now
		log_file:flush()
	end
end

function disconnect_client()
	if log_file then
		log_file:close()
		log_file = nil
	end
end
