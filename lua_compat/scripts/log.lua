--[[
log.lua: one line per query, the way operators have logged with mysql-proxy since 2008.

    LOG_FILE=/var/log/mysql-queries.log mysql-proxy --proxy-lua-script=log.lua

Each COM_QUERY is appended to LOG_FILE (default: mysql-proxy-queries.log in the current
directory) as

    2026-11-29 10:04:49 42 -- SELECT * FROM t WHERE id = 1

date and time, the server's thread id, and the query as the client sent it. Nothing else
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
end

function read_query(packet)
	if log_file == nil or packet:byte() ~= proxy.COM_QUERY then
		return
	end
	local server = proxy.connection.server
	local thread_id = server and server.thread_id or 0
	log_file:write(string.format("%s %d -- %s\n",
		os.date("%Y-%m-%d %H:%M:%S"), thread_id, packet:sub(2)))
	log_file:flush()
end

function disconnect_client()
	if log_file then
		log_file:close()
		log_file = nil
	end
end
