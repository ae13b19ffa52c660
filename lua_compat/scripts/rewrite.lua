--[[
rewrite.lua: query rewriting and refusal, the two things scripts most often did with
proxy.queries and proxy.response.

* Every COM_QUERY is tagged with a comment naming the client, so the server's process
  list and slow log show where a query came from:
      SELECT 1   becomes   /* client=10.0.0.7:53422 user=app */ SELECT 1
* Statements matching one of DENY (Lua patterns, matched against the upper-cased query
  with its leading blanks and comments removed) are refused with an ERR, and never
  reach the server.
* Queries slower than SLOW_MS (environment, default 1000) are reported on standard
  error, with the time the server took; their results are streamed to the client, not
  buffered (resultset_is_needed is false).
--]]

local DENY = {
	"^DROP%s+DATABASE",
	"^DROP%s+SCHEMA",
	"^TRUNCATE",
}
local SLOW_US = (tonumber(os.getenv("SLOW_MS")) or 1000) * 1000
local QUERY_ID = 1

local function first_words(query)
	-- drop leading blanks and /* ... */ comments, then upper-case
	local text = query
	repeat
		local before = text
		text = text:gsub("^%s+", ""):gsub("^/%*.-%*/", "")
	until text == before
	return text:upper()
end

function read_query(packet)
	if packet:byte() ~= proxy.COM_QUERY then
		return
	end
	local query = packet:sub(2)
	local head = first_words(query)
	for _, pattern in ipairs(DENY) do
		if head:find(pattern) then
			proxy.response = {
				type = proxy.MYSQLD_PACKET_ERR,
				errmsg = "rewrite.lua: statement refused by the proxy: " .. pattern,
				errcode = 1142,
				sqlstate = "42000",
			}
			return proxy.PROXY_SEND_RESULT
		end
	end
	local c = proxy.connection.client
	local tag = string.format("/* client=%s user=%s */ ", c.src.name, c.username or "")
	proxy.queries:append(QUERY_ID, string.char(proxy.COM_QUERY) .. tag .. query)
	return proxy.PROXY_SEND_QUERY
end

function read_query_result(inj)
	if inj.id == QUERY_ID and inj.response_time > SLOW_US then
		io.stderr:write(string.format("rewrite.lua: slow query (%.1f ms): %s\n",
			inj.response_time / 1000, inj.query:sub(2)))
	end
	-- nothing returned: the result (already streamed) stands
end
