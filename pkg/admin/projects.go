package admin

import (
	"context"

	"github.com/tollgate-dev/tollgate/pkg/ledger"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
)

func projectProto(p ledger.Project) *pb.Project {
	return &pb.Project{
		Id:                p.ID,
		Account:           p.Account,
		Activated:         p.Activated,
		RequestsPerMinute: p.RPM,
		TokensPerMinute:   p.TPM,
	}
}

func (s *Service) project(ctx context.Context, op, id string) (*pb.Project, error) {
	p, err := s.cfg.Store.GetProject(ctx, id)
	if err != nil {
		return nil, s.storeError(op, err)
	}
	return projectProto(p), nil
}

// CreateProject implements pb.ProjectServiceServer.
func (s *Service) CreateProject(ctx context.Context, req *pb.CreateProjectRequest) (*pb.CreateProjectResponse, error) {
	p, err := s.cfg.Store.CreateProject(ctx, req.GetId(), req.GetAccount(), req.GetActivate())
	if err != nil {
		return nil, s.storeError("create project", err)
	}
	return &pb.CreateProjectResponse{Project: projectProto(p)}, nil
}

// GetProject implements pb.ProjectServiceServer.
func (s *Service) GetProject(ctx context.Context, req *pb.GetProjectRequest) (*pb.GetProjectResponse, error) {
	p, err := s.project(ctx, "get project", req.GetId())
	if err != nil {
		return nil, err
	}
	return &pb.GetProjectResponse{Project: p}, nil
}

// ListProjects implements pb.ProjectServiceServer.
func (s *Service) ListProjects(ctx context.Context, req *pb.ListProjectsRequest) (*pb.ListProjectsResponse, error) {
	if req.GetAccount() != "" {
		// An unknown account is a typo to report, not an empty list.
		if _, err := s.cfg.Store.GetAccount(ctx, req.GetAccount()); err != nil {
			return nil, s.storeError("list projects", err)
		}
	}
	ps, err := s.cfg.Store.ListProjects(ctx, req.GetAccount())
	if err != nil {
		return nil, s.storeError("list projects", err)
	}
	out := &pb.ListProjectsResponse{Projects: make([]*pb.Project, 0, len(ps))}
	for _, p := range ps {
		out.Projects = append(out.Projects, projectProto(p))
	}
	return out, nil
}

// ActivateProject implements pb.ProjectServiceServer.
func (s *Service) ActivateProject(ctx context.Context, req *pb.ActivateProjectRequest) (*pb.ActivateProjectResponse, error) {
	if err := s.cfg.Store.ActivateProject(ctx, req.GetId()); err != nil {
		return nil, s.storeError("activate project", err)
	}
	p, err := s.project(ctx, "activate project", req.GetId())
	if err != nil {
		return nil, err
	}
	return &pb.ActivateProjectResponse{Project: p}, nil
}

// SetProjectLimits implements pb.ProjectServiceServer.
func (s *Service) SetProjectLimits(ctx context.Context, req *pb.SetProjectLimitsRequest) (*pb.SetProjectLimitsResponse, error) {
	if err := s.cfg.Store.SetProjectLimits(ctx, req.GetId(), req.GetRequestsPerMinute(), req.GetTokensPerMinute()); err != nil {
		return nil, s.storeError("set project limits", err)
	}
	p, err := s.project(ctx, "set project limits", req.GetId())
	if err != nil {
		return nil, err
	}
	return &pb.SetProjectLimitsResponse{Project: p}, nil
}
