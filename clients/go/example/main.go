// Command example calls Repogate from Go: users, a filtered and paged list, an
// update with an etag, transactions through x-transaction-id, and AIP-193
// error details.
//
//	example [ADDRESS]     (or REPOGATE_ADDRESS; default 127.0.0.1:50051)
//
// Prints one line per step; exits 1 on the first unexpected result.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	repogatev1 "repogate.dev/api/repogate/v1"
)

var (
	root         context.Context // one deadline for the whole example
	tenant       string
	users        repogatev1.UserServiceClient
	transactions repogatev1.TransactionServiceClient
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func check(ok bool, format string, args ...interface{}) {
	if !ok {
		fail(format, args...)
	}
}

// ctx carries x-tenant-id, then any extra key/value pairs.
func ctx(pairs ...string) context.Context {
	return metadata.AppendToOutgoingContext(root, append([]string{"x-tenant-id", tenant}, pairs...)...)
}

func must(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

// details decodes the AIP-193 details of a failed call.
func details(err error) (codes.Code, *errdetails.ErrorInfo, *errdetails.BadRequest) {
	st, ok := status.FromError(err)
	check(ok, "not a gRPC status: %v", err)
	var info *errdetails.ErrorInfo
	bad := &errdetails.BadRequest{}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.BadRequest:
			bad = d
		}
	}
	check(info != nil, "no ErrorInfo in the status details of %v", err)
	return st.Code(), info, bad
}

func fails(err error, code codes.Code, reason string) (*errdetails.ErrorInfo, *errdetails.BadRequest) {
	check(err != nil, "expected %v %s, the call succeeded", code, reason)
	got, info, bad := details(err)
	check(got == code && info.Reason == reason, "expected %v %s, got %v %s: %v", code, reason, got, info.Reason, err)
	return info, bad
}

func exists(id string, pairs ...string) bool {
	_, err := users.GetUser(ctx(pairs...), &repogatev1.GetUserRequest{Id: id})
	if status.Code(err) == codes.NotFound {
		return false
	}
	must(err, "GetUser")
	return true
}

func createUser(name, displayName string, pairs ...string) *repogatev1.User {
	user, err := users.CreateUser(ctx(pairs...), &repogatev1.CreateUserRequest{
		User: &repogatev1.User{Email: name + "@example.com", Username: name, DisplayName: displayName},
	})
	must(err, "CreateUser "+name)
	return user
}

func main() {
	address := os.Getenv("REPOGATE_ADDRESS")
	if len(os.Args) > 1 {
		address = os.Args[1]
	}
	if address == "" {
		address = "127.0.0.1:50051"
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	tenant = "go-" + hex.EncodeToString(suffix)
	var cancel context.CancelFunc
	root, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := grpc.Dial(address, grpc.WithInsecure())
	must(err, "dial")
	defer conn.Close()
	users = repogatev1.NewUserServiceClient(conn)
	transactions = repogatev1.NewTransactionServiceClient(conn)
	fmt.Printf("address %s, tenant %s\n", address, tenant)

	var created []*repogatev1.User
	for i, name := range []string{"ann", "bob", "cid", "dee", "eve"} {
		display := "Other " + name
		if i < 3 {
			display = "Go " + name
		}
		created = append(created, createUser(name, display))
	}
	fmt.Printf("created %d users\n", len(created))

	var listed []string
	pages, token := 0, ""
	for {
		page, err := users.ListUsers(ctx(), &repogatev1.ListUsersRequest{Filter: `display_name = "Go*"`, PageSize: 2, PageToken: token})
		must(err, "ListUsers")
		for _, u := range page.Users {
			listed = append(listed, u.Username)
		}
		pages++
		check(pages <= 10, "paging does not end")
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	check(strings.Join(listed, ",") == "ann,bob,cid", "filtered list gave %v", listed)
	fmt.Printf("listed display_name = \"Go*\" with page_size 2: %s in %d pages\n", strings.Join(listed, ", "), pages)

	ann := created[0]
	mask := &fieldmaskpb.FieldMask{Paths: []string{"display_name"}}
	updated, err := users.UpdateUser(ctx(), &repogatev1.UpdateUserRequest{
		User: &repogatev1.User{Id: ann.Id, DisplayName: "Go Ann B", Etag: ann.Etag}, UpdateMask: mask,
	})
	must(err, "UpdateUser with the etag")
	check(updated.DisplayName == "Go Ann B" && updated.Etag != ann.Etag, "update with the etag did not apply")
	fmt.Printf("updated ann with etag %s: display_name %q, etag now %s\n", ann.Etag, updated.DisplayName, updated.Etag)
	_, err = users.UpdateUser(ctx(), &repogatev1.UpdateUserRequest{
		User: &repogatev1.User{Id: ann.Id, DisplayName: "lost", Etag: ann.Etag}, UpdateMask: mask,
	})
	info, _ := fails(err, codes.Aborted, "ETAG_MISMATCH")
	fmt.Printf("update with the stale etag %s: %v %s\n", ann.Etag, codes.Aborted, info.Reason)

	tx, err := transactions.BeginTransaction(ctx(), &repogatev1.BeginTransactionRequest{
		Options: &repogatev1.TransactionOptions{IdleTimeout: durationpb.New(30 * time.Second)},
	})
	must(err, "BeginTransaction")
	fay := createUser("fay", "", "x-transaction-id", tx.Id)
	check(exists(fay.Id, "x-transaction-id", tx.Id), "fay is not visible inside her transaction")
	check(!exists(fay.Id), "fay is visible outside her transaction before commit")
	_, err = transactions.Commit(ctx(), &repogatev1.CommitRequest{TransactionId: tx.Id})
	must(err, "Commit")
	check(exists(fay.Id), "fay is missing after commit")
	fmt.Println("transaction: begin, create fay, visible inside only, commit: fay exists")

	tx, err = transactions.BeginTransaction(ctx(), &repogatev1.BeginTransactionRequest{})
	must(err, "BeginTransaction")
	gus := createUser("gus", "", "x-transaction-id", tx.Id)
	_, err = transactions.Rollback(ctx(), &repogatev1.RollbackRequest{TransactionId: tx.Id})
	must(err, "Rollback")
	check(!exists(gus.Id), "gus exists after rollback")
	fmt.Println("transaction: begin, create gus, rollback: gus is absent")

	_, err = users.CreateUser(ctx(), &repogatev1.CreateUserRequest{User: &repogatev1.User{Email: "not-an-email", Username: "hal"}})
	info, bad := fails(err, codes.InvalidArgument, "INVALID_ARGUMENT")
	check(info.Domain == "repogate.dev", "ErrorInfo domain is %s", info.Domain)
	check(info.Metadata["request_id"] != "", "ErrorInfo metadata has no request_id")
	fields := []string{}
	for _, v := range bad.FieldViolations {
		fields = append(fields, v.Field)
	}
	check(strings.Contains(","+strings.Join(fields, ",")+",", ",user.email,"), "BadRequest fields are %v", fields)
	fmt.Printf("invalid email: %v, ErrorInfo reason %s, domain %s, metadata %v\n", codes.InvalidArgument, info.Reason, info.Domain, info.Metadata)
	for _, v := range bad.FieldViolations {
		fmt.Printf("  BadRequest %s: %s\n", v.Field, v.Description)
	}
	fmt.Println("go example: OK")
}
