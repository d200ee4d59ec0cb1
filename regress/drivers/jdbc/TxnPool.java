/*
 * TxnPool: JDBC with prepareThreshold=1 through a pgtide in transaction pooling. N threads
 * (args[0], default 50), each with its own connection: server-side prepared statements from the
 * first execution (names S_1, S_2... repeat across connections with different texts), rows
 * written and read back, also inside a transaction. Target from PGTIDE_* (no TLS). Prints
 * "jdbc: K of N clients ok" and exits 1 when any client failed.
 */
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

public class TxnPool {
    static String env(String k, String d) {
        String v = System.getenv(k);
        return v == null || v.isEmpty() ? d : v;
    }

    static void client(int id) throws Exception {
        String url = "jdbc:postgresql://" + env("PGTIDE_HOST", "127.0.0.1") + ":"
            + env("PGTIDE_PORT", "6432") + "/appdb?user=app&password=secret&sslmode=disable"
            + "&prepareThreshold=1&connectTimeout=30";
        try (Connection c = DriverManager.getConnection(url)) {
            // a per-client text first, so that S_1 means a different query on each connection
            try (PreparedStatement own = c.prepareStatement("SELECT ?::int + " + id);
                 PreparedStatement ins = c.prepareStatement(
                     "INSERT INTO txn_drv (drv, client, k, v) VALUES ('jdbc', ?, ?, ?)")) {
                for (int i = 0; i < 10; i++) {
                    own.setInt(1, i);
                    try (ResultSet rs = own.executeQuery()) {
                        rs.next();
                        if (rs.getInt(1) != i + id)
                            throw new Exception("client " + id + ": own " + rs.getInt(1));
                    }
                    ins.setInt(1, id);
                    ins.setInt(2, i);
                    ins.setString(3, "jdbc-" + id + "-" + i);
                    ins.executeUpdate();
                }
                c.setAutoCommit(false);
                ins.setInt(1, id);
                ins.setInt(2, 100);
                ins.setString(3, "jdbc-" + id + "-txn");
                ins.executeUpdate();
                c.commit();
                c.setAutoCommit(true);
            }
            StringBuilder got = new StringBuilder(), want = new StringBuilder();
            try (PreparedStatement get = c.prepareStatement(
                     "SELECT k, v FROM txn_drv WHERE drv = 'jdbc' AND client = ? ORDER BY k")) {
                get.setInt(1, id);
                try (ResultSet rs = get.executeQuery()) {
                    while (rs.next())
                        got.append(rs.getInt(1)).append(':').append(rs.getString(2)).append(' ');
                }
            }
            for (int i = 0; i < 10; i++)
                want.append(i).append(":jdbc-").append(id).append('-').append(i).append(' ');
            want.append("100:jdbc-").append(id).append("-txn ");
            if (!got.toString().equals(want.toString()))
                throw new Exception("client " + id + " read back " + got);
        }
    }

    public static void main(String[] args) throws Exception {
        int n = args.length > 0 ? Integer.parseInt(args[0]) : 50;
        AtomicInteger okCount = new AtomicInteger();
        List<Thread> threads = new ArrayList<>();
        List<String> errors = java.util.Collections.synchronizedList(new ArrayList<>());
        for (int i = 0; i < n; i++) {
            final int id = i;
            Thread t = new Thread(() -> {
                try {
                    client(id);
                    okCount.incrementAndGet();
                } catch (Exception e) {
                    errors.add(String.valueOf(e));
                }
            });
            threads.add(t);
            t.start();
        }
        for (Thread t : threads)
            t.join();
        for (int i = 0; i < Math.min(5, errors.size()); i++)
            System.out.println("FAIL: " + errors.get(i));
        System.out.println("jdbc: " + okCount.get() + " of " + n + " clients ok");
        System.exit(okCount.get() == n ? 0 : 1);
    }
}
