--[[
auditing.lua: who logged in, from where, and whether the server let them in.

    AUDIT_LOG_FILE=/var/log/mysql-audit.log mysql-proxy --proxy-lua-script=auditing.lua

One line per event, appended to AUDIT_LOG_FILE (default: standard error):

    2026-11-29 10:04:49 login ok user=app db=shop client=10.0.0.7:53422 thread=42
    2026-11-29 10:04:50 login failed user=app db= client=10.0.0.7:53424 error=1045 Access denied ...
    2026-11-29 10:07:12 logout user=app client=10.0.0.7:53422 queries=17

Passwords never reach the log: only the user name and default schema of the handshake
response are read. The script takes no decisions; the login goes through unchanged.
--]]

local proto = require("mysql.proto")

local audit_path = os.getenv("AUDIT_LOG_FILE")
local audit_file = audit_path and io.open(audit_path, "a") or io.stderr

local user, db, client = "", "", ""
local queries = 0

local function audit(text)
	audit_file:write(os.date("%Y-%m-%d %H:%M:%S"), " ", text, "\n")
	audit_file:flush()
end

function read_auth()
	local c = proxy.connection.client
	user, db, client = c.username or "", c.default_db or "", c.src.name
end

function read_auth_result(auth)
	local status = auth.packet:byte()
	if status == proxy.MYSQLD_PACKET_OK then
		local server = proxy.connection.server
		audit(string.format("login ok user=%s db=%s client=%s thread=%d",
			user, db, client, server and server.thread_id or 0))
	elseif status == proxy.MYSQLD_PACKET_ERR then
		local err = proto.from_err_packet(auth.packet)
		audit(string.format("login failed user=%s db=%s client=%s error=%d %s",
			user, db, client, err.errcode, err.errmsg))
		user = ""  -- no logout line for a login that failed
	end
	-- anything else (an auth switch) is followed by a second result, audited then
end

function read_query(packet)
	queries = queries + 1
end

function disconnect_client()
	if user ~= "" then
		audit(string.format("logout user=%s client=%s queries=%d", user, client, queries))
	end
end
