-- @name: ../../etc/x
CREATE STREAM "../x" AS SELECT a FROM t;
