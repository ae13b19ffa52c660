"""Python halves of mysql-proxy 0.8's C modules: mysql.proto, mysql.password, mysql.tokenizer."""
