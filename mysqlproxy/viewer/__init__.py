"""`mysqlproxy top` and `mysqlproxy tail`: slow queries, digests and the proxy's state,
read over the admin interface.

    data.py     the records and the data source the viewer reads (AdminSource polls
                the admin interface; any object with the same methods will do)
    app.py      the textual App: widgets only, no network
    table.py    a table that draws only the rows on screen (the lists)
    sql.py      SQL pretty-printing and highlighting
    explain.py  EXPLAIN through a side connection to the backend
    tail.py     events to stdout, one per line
    fake.py     data sources without a proxy, for tests and measurements
"""
