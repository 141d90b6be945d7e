-- G2: one TRUNCATE statement naming two tables, with inserts into both just before it
-- and after it in the same transaction. Kind G1 (truncates ordered against row
-- actions in every sink).
---- config
  - name: a_search
    store: search
    from: public.ta
    index: ${CORPUS_ID}_ta
  - name: b_cache
    store: cache
    from: public.tb
    key: "${CORPUS_ID}:tb:{id}"
  - name: ab_counts
    store: warehouse
    table: corpus_out.ab_counts
    key: [k]
    query: select a.k, count(*) as n from public.ta a join public.tb b on b.id = a.id group by a.k
---- schema
create table ta (id int primary key, k text);
create table tb (id int primary key, v text);
---- before
insert into ta values (1, 'x'), (2, 'y');
insert into tb values (1, 'p'), (2, 'q');
---- stream
insert into ta values (3, 'z'); insert into tb values (3, 'r');
truncate ta, tb;
insert into ta values (4, 'w'); insert into tb values (4, 's');
---- expect opensearch ${CORPUS_ID}_ta
4 {"id":4,"k":"w"}
---- expect redis ${CORPUS_ID}:tb:*
${CORPUS_ID}:tb:4 {"id":4,"v":"s"}
---- expect postgres select k, n from corpus_out.ab_counts order by k
w|1
---- expect status
a_search live
b_cache live
ab_counts live
---- expect readyz 200
---- expect verify 0
